"""The landing zone: immutable, durable segment files of accepted OTLP requests.

A segment is an Arrow IPC file ``<landing>/seg-<UTC time>-<random>.arrow`` with one row per
accepted request (schema :data:`SEGMENT`): the signal, when it was received, and the request as
OTLP protobuf bytes (JSON requests are converted on receipt, so readers decode one format).

Durability: a segment is written under a temporary name (``.seg-*.tmp``, which no reader globs),
flushed and fsynced, then renamed into place and the directory fsynced. A crash therefore never
leaves a half-written segment visible, and once :func:`write_segment` returns the data survives a
power cut; only then does the receiver acknowledge the request.
"""

from __future__ import annotations

import datetime as dt
import os
import uuid
from pathlib import Path
from typing import Iterator, Sequence

import pyarrow as pa

SIGNALS = ("traces", "logs", "metrics")

SEGMENT = pa.schema(
    [
        pa.field("signal", pa.string(), nullable=False),  # traces | logs | metrics
        pa.field("received_at", pa.timestamp("ns", tz="UTC"), nullable=False),
        pa.field("body", pa.large_binary(), nullable=False),  # serialized Export*ServiceRequest
    ]
)

SEGMENT_GLOB = "seg-*.arrow"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_segment(landing: str | Path, records: Sequence[tuple[str, bytes]], now: dt.datetime | None = None) -> Path:
    """Write ``records`` (signal, protobuf body) as one durable segment; return its path."""
    landing = Path(landing)
    landing.mkdir(parents=True, exist_ok=True)
    now = now or dt.datetime.now(dt.timezone.utc)
    for signal, _ in records:
        if signal not in SIGNALS:
            raise ValueError(f"unknown signal {signal!r}; expected one of {', '.join(SIGNALS)}")
    stamp = now.strftime("%Y%m%dT%H%M%S%fZ")
    name = f"seg-{stamp}-{uuid.uuid4().hex[:12]}.arrow"
    tmp = landing / f".{name}.tmp"
    table = pa.table(
        {
            "signal": pa.array([r[0] for r in records], pa.string()),
            "received_at": pa.array([now] * len(records), SEGMENT.field("received_at").type),
            "body": pa.array([r[1] for r in records], pa.large_binary()),
        },
        schema=SEGMENT,
    )
    try:
        with open(tmp, "wb") as f:
            with pa.ipc.new_file(f, SEGMENT) as w:
                w.write_table(table)
            f.flush()
            os.fsync(f.fileno())
        final = landing / name
        os.rename(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)  # never leave garbage; nothing was acknowledged
        raise
    _fsync_dir(landing)
    return final


def read_segment(path: str | Path) -> pa.Table:
    """Read one segment. Raises ``ValueError`` if it is not a segment (wrong schema, truncated)."""
    try:
        with pa.memory_map(str(path)) as src:
            table = pa.ipc.open_file(src).read_all()
    except (pa.ArrowInvalid, OSError) as e:
        raise ValueError(f"{path}: not a readable landing segment: {e}") from None
    if not table.schema.equals(SEGMENT, check_metadata=False):
        raise ValueError(f"{path}: not a landing segment (schema {table.schema.names})")
    return table


def iter_requests(path: str | Path) -> Iterator[tuple[str, bytes]]:
    """Yield (signal, protobuf body) for every request stored in a segment."""
    table = read_segment(path)
    for signal, body in zip(table.column("signal").to_pylist(), table.column("body").to_pylist()):
        yield signal, body


def list_segments(landing: str | Path) -> list[Path]:
    """Committed segments in a landing folder, oldest first (names sort by receive time)."""
    return sorted(Path(landing).glob(SEGMENT_GLOB))
