"""TensorBoard scalar events, written without TensorFlow, tensorboardX or torch.

TensorBoard reads `events.out.tfevents.*` files: TFRecord-framed `Event`
protocol buffers. The scalars a training run logs need three messages of
that schema (tensorboard/compat/proto/event.proto and summary.proto):

    Event   {double wall_time = 1; int64 step = 2;
             string file_version = 3; Summary summary = 5;}
    Summary {repeated Value value = 1;}
    Value   {string tag = 1; float simple_value = 2;}

encoded here by hand, each record framed as TFRecord frames it:

    uint64 length, uint32 masked_crc32c(length), bytes data,
    uint32 masked_crc32c(data)     (little-endian; CRC-32C, Castagnoli)

Why not tensorboardX: importing it imports torch whenever torch is installed
(2.6-3.0 s of every train.py / eval.py start-up here; benchmarks/README.md). `tests/test_tb_events.py` reads these files back with
tensorboardX's own protobuf classes.
"""
from __future__ import annotations

import os
import socket
import struct
import time
from typing import Mapping

_CRC32C_POLY = 0x82F63B78  # CRC-32C (Castagnoli), bit-reflected


def _crc_table():
  table = []
  for byte in range(256):
    crc = byte
    for _ in range(8):
      crc = (crc >> 1) ^ (_CRC32C_POLY if crc & 1 else 0)
    table.append(crc)
  return table


_CRC_TABLE = _crc_table()


def crc32c(data: bytes) -> int:
  crc = 0xFFFFFFFF
  for byte in data:
    crc = _CRC_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
  return crc ^ 0xFFFFFFFF


def _masked_crc(data: bytes) -> int:
  crc = crc32c(data)
  return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(value: int) -> bytes:
  value &= (1 << 64) - 1  # int64: negatives as two's complement, 10 bytes
  out = bytearray()
  while True:
    bits = value & 0x7F
    value >>= 7
    if value:
      out.append(bits | 0x80)
    else:
      out.append(bits)
      return bytes(out)


def _length_delimited(field: int, payload: bytes) -> bytes:
  return _varint(field << 3 | 2) + _varint(len(payload)) + payload


def encode_event(wall_time: float, step: int = 0, *, file_version: str = '',
                 scalars: Mapping[str, float] | None = None) -> bytes:
  """One serialised `Event`: a file-version header or a step's scalars."""
  out = bytes([1 << 3 | 1]) + struct.pack('<d', wall_time)
  if step:
    out += _varint(2 << 3) + _varint(step)
  if file_version:
    out += _length_delimited(3, file_version.encode())
  if scalars:
    summary = b''.join(
        _length_delimited(1, _length_delimited(1, tag.encode()) +
                          bytes([2 << 3 | 5]) + struct.pack('<f', value))
        for tag, value in scalars.items())
    out += _length_delimited(5, summary)
  return out


def frame_record(data: bytes) -> bytes:
  """TFRecord framing of one record."""
  length = struct.pack('<Q', len(data))
  return (length + struct.pack('<I', _masked_crc(length)) + data +
          struct.pack('<I', _masked_crc(data)))


class EventWriter:
  """Appends scalar events to a new `events.out.tfevents.*` file in
  `logdir`; each `write` is flushed, so a killed run keeps what it logged.

  A gs:// `logdir` cannot be appended to: there each `write` (at most every
  `flush_every_s` seconds) becomes one complete events object,
  `events.out.tfevents.<start>.<host>.<pid>.<flush number>`, each beginning
  with the file-version event. TensorBoard reads a folder's event files in
  name order and every object is whole when it appears.
  """

  def __init__(self, logdir: str, flush_every_s: float = 0.0):
    from flax_attn import storage  # pylint: disable=g-import-not-at-top
    self._storage = storage
    self.remote = storage.is_remote(logdir)
    now = time.time()
    self.path = storage.join(
        logdir, f'events.out.tfevents.{int(now)}.{socket.gethostname()}.'
        f'{os.getpid()}')
    self.flush_every_s = float(flush_every_s)
    self._buffer = []
    self._seq = 0
    self._last_flush = time.monotonic()
    self._file = None
    if self.remote:
      self._header = frame_record(encode_event(now, file_version='brain.Event:2'))
      return
    os.makedirs(logdir, exist_ok=True)
    self._file = open(self.path, 'ab')
    self._append(encode_event(now, file_version='brain.Event:2'))

  def _append(self, event: bytes) -> None:
    if self._file is None:
      self._buffer.append(frame_record(event))
      if time.monotonic() - self._last_flush >= self.flush_every_s:
        self.flush()
      return
    self._file.write(frame_record(event))
    self._file.flush()

  def flush(self) -> None:
    """Bucket: writes the buffered events as one object (none if empty)."""
    if self._file is not None:
      self._file.flush()
      return
    if self._buffer:
      self._storage.write_atomic(f'{self.path}.{self._seq:06d}',
                                 self._header + b''.join(self._buffer))
      self._seq += 1
      self._buffer = []
    self._last_flush = time.monotonic()

  def write(self, step: int, scalars: Mapping[str, float]) -> None:
    if scalars:
      self._append(encode_event(time.time(), step, scalars={
          k: float(v) for k, v in scalars.items()}))

  def close(self) -> None:
    if self._file is None:
      self.flush()
      return
    self._file.close()
