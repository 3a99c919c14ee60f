"""Name registries: one for attention types, one for models.

big_vision's habit: registering a name twice is an error, and looking up a
name that is not registered fails with one line naming the closest valid
choices.
"""
from __future__ import annotations

import difflib
import fnmatch
import importlib
import pkgutil
from typing import Any, Callable, Dict, Iterable, List

from flax_attn.errors import UnknownNameError  # noqa: F401  (raised here)


def suggest(name: str, valid: Iterable[str], kind: str) -> str:
  """One line naming `name` as unknown with the closest valid choices."""
  valid = sorted(valid)
  close = difflib.get_close_matches(str(name), valid, n=5, cutoff=0.5)
  if close:
    hint = 'did you mean ' + ', '.join(repr(c) for c in close) + '?'
  else:
    shown = ', '.join(valid[:12]) + (', ...' if len(valid) > 12 else '')
    hint = f'valid {kind} names: {shown}'
  return f'unknown {kind} {name!r}; {hint}'


class Registry:
  """A mapping from names to objects that refuses duplicates."""

  def __init__(self, kind: str):
    self.kind = kind
    self._entries: Dict[str, Any] = {}

  def register(self, name: str, obj: Any = None):
    """Registers `obj` under `name`; usable as a decorator when obj is None."""

    def _add(o):
      if name in self._entries:
        raise ValueError(f'{self.kind} {name!r} is already registered')
      self._entries[name] = o
      return o

    return _add if obj is None else _add(obj)

  def get(self, name: str) -> Any:
    if name not in self._entries:
      raise UnknownNameError(suggest(name, self._entries, self.kind))
    return self._entries[name]

  def names(self, pattern: str = '*') -> List[str]:
    return sorted(n for n in self._entries if fnmatch.fnmatch(n, pattern))

  def __contains__(self, name: str) -> bool:
    return name in self._entries


ATTENTION = Registry('attention')
MODELS = Registry('model')


def register_attention(name: str) -> Callable:
  """Class decorator: `@register_attention('se') class SqueezeExcite(...)`."""
  return ATTENTION.register(name)


def register_model(name: str) -> Callable:
  """Function decorator for a named model builder returning its kwargs."""
  return MODELS.register(name)


def import_submodules(package: str, path) -> None:
  """Imports every module of a package (so their registrations run)."""
  for info in sorted(pkgutil.iter_modules(path), key=lambda m: m.name):
    if not info.name.startswith('_'):
      importlib.import_module(f'{package}.{info.name}')
