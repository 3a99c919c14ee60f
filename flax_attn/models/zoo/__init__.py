"""Named models of attention papers, one file per paper or family.

Every module here is imported by `flax_attn.models`, so a new file's
`@register_model` functions are picked up without any other edit.
"""
from flax_attn.registry import import_submodules

import_submodules(__name__, __path__)
