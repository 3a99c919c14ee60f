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
  `logdir`; each `write` is flushed, so a killed run keeps what it logged."""

  def __init__(self, logdir: str):
    os.makedirs(logdir, exist_ok=True)
    now = time.time()
    self.path = os.path.join(
        logdir, f'events.out.tfevents.{int(now)}.{socket.gethostname()}.'
        f'{os.getpid()}')
    self._file = open(self.path, 'ab')
    self._append(encode_event(now, file_version='brain.Event:2'))

  def _append(self, event: bytes) -> None:
    self._file.write(frame_record(event))
    self._file.flush()

  def write(self, step: int, scalars: Mapping[str, float]) -> None:
    if scalars:
      self._append(encode_event(time.time(), step, scalars={
          k: float(v) for k, v in scalars.items()}))

  def close(self) -> None:
    self._file.close()
