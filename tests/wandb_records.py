"""Read an offline W&B run's transaction log (run-<id>.wandb) with W&B's own protobuf schema.

The file is W&B's 7-byte header (":W&B", magic 0xBEE1, version 0) and then LevelDB's log format: 32 KiB
blocks of records, each a 7-byte header (CRC-32C, length, type: 1 full, 2 first, 3 middle, 4 last) and its
bytes, a record split across blocks where it does not fit. Each assembled record is a wandb `Record`.
"""

import json
import struct
from pathlib import Path

from wandb.proto import wandb_internal_pb2

HEADER = 7
BLOCK = 32 * 1024


def records(path: Path) -> list[wandb_internal_pb2.Record]:
    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B transaction log"
    found, pending, offset = [], b"", HEADER
    while offset + HEADER <= len(data):
        room = BLOCK - offset % BLOCK
        if room < HEADER:  # the block's tail is too short for a record header: padding
            offset += room
            continue
        _, length, kind = struct.unpack("<IHB", data[offset : offset + HEADER])
        pending += data[offset + HEADER : offset + HEADER + length]
        offset += HEADER + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            found.append(record)
            pending = b""
    return found


def summary(path: Path) -> dict:
    values = {}
    for record in records(path):
        if record.WhichOneof("record_type") == "summary":
            for item in record.summary.update:
                values[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
    return values
