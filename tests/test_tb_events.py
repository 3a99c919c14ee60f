"""TensorBoard event files (flax_attn/tb_events.py) against tensorboardX's
protobuf classes and record framing, which a test may import (it pulls in
torch; the library does not)."""
import os
import struct
import subprocess
import sys

from tensorboardX import record_writer
from tensorboardX.proto import event_pb2

from flax_attn import tb_events


def _records(path):
  """TFRecord payloads of a file, with both CRCs checked by tensorboardX's."""
  data = open(path, 'rb').read()
  out, pos = [], 0
  while pos < len(data):
    header = data[pos:pos + 8]
    (length,) = struct.unpack('<Q', header)
    (header_crc,) = struct.unpack('<I', data[pos + 8:pos + 12])
    payload = data[pos + 12:pos + 12 + length]
    (payload_crc,) = struct.unpack('<I', data[pos + 12 + length:
                                              pos + 16 + length])
    assert header_crc == record_writer.masked_crc32c(header)
    assert payload_crc == record_writer.masked_crc32c(payload)
    out.append(payload)
    pos += 16 + length
  return out


def test_crc32c_check_value():
  # The CRC-32C check value (RFC 3720, appendix B.4).
  assert tb_events.crc32c(b'123456789') == 0xE3069283


def test_events_are_what_protobuf_serialises():
  event = event_pb2.Event(wall_time=1700000000.25, step=2**40 + 3)
  event.summary.value.add(tag='train_loss', simple_value=0.125)
  event.summary.value.add(tag='lr', simple_value=-1e-3)
  ours = tb_events.encode_event(1700000000.25, 2**40 + 3, scalars={
      'train_loss': 0.125, 'lr': -1e-3})
  assert ours == event.SerializeToString()
  header = event_pb2.Event(wall_time=5.0, file_version='brain.Event:2')
  assert (tb_events.encode_event(5.0, file_version='brain.Event:2') ==
          header.SerializeToString())


def test_records_are_framed_as_tensorboardx_frames_them(tmp_path):
  payload = tb_events.encode_event(1.5, 7, scalars={'top1': 0.5})
  writer = record_writer.RecordWriter(str(tmp_path / 'theirs'))
  writer.write(payload)
  writer.close()
  theirs = open(tmp_path / 'theirs', 'rb').read()
  assert tb_events.frame_record(payload) == theirs


def test_writer_round_trip(tmp_path):
  writer = tb_events.EventWriter(str(tmp_path / 'tb'))
  writer.write(0, {'train_loss': 2.5})
  writer.write(12, {'top1': 0.75, 'eval_loss': 1.25, 'epoch': 3})
  writer.write(13, {})  # nothing to log: no record
  writer.close()
  (name,) = os.listdir(tmp_path / 'tb')
  assert name.startswith('events.out.tfevents.')
  events = [event_pb2.Event.FromString(r)
            for r in _records(tmp_path / 'tb' / name)]
  assert events[0].file_version == 'brain.Event:2'
  got = [(e.step, {v.tag: v.simple_value for v in e.summary.value})
         for e in events[1:]]
  assert got == [(0, {'train_loss': 2.5}),
                 (12, {'top1': 0.75, 'eval_loss': 1.25, 'epoch': 3.0})]
  assert all(e.wall_time > 1.6e9 for e in events)


def test_training_imports_neither_torch_nor_tensorboardx(tmp_path):
  # What train.py does before its first step: import, then open the writer.
  code = ('import sys; from flax_attn import train; '
          f'w = train.MetricWriter({str(tmp_path)!r}); '
          'w.write(1, {"train_loss": 1.0}); w.close(); '
          'print(sorted(m for m in ("torch", "tensorboardX", "tensorflow") '
          'if m in sys.modules))')
  out = subprocess.run([sys.executable, '-c', code], capture_output=True,
                       text=True, check=True)
  assert out.stdout.strip() == '[]', out.stdout
  assert os.listdir(tmp_path / 'tensorboard')
