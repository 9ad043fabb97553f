"""Group commit into the landing zone: many requests, one durable segment, then the acks.

:class:`GroupCommitWriter` promises:

- :meth:`~GroupCommitWriter.submit` returns a future that resolves (to the segment path) only
  after the segment holding that request has been written, fsynced and renamed into place by
  :func:`tenantry.landing.write_segment`. Only then may a front end acknowledge the request.
- Requests arriving within ``flush_interval_s`` of the first waiting one, up to ``flush_bytes``,
  share one segment; the write runs in the writer's own thread, never on an event loop.
- If a write fails, every future in that batch fails with :class:`LandingWriteError` (the
  clients get a retryable error), and nothing is acknowledged that is not on disk.
- More than ``max_pending_bytes`` waiting raises :class:`ReceiverOverloaded` at submit time
  (backpressure), and after :meth:`~GroupCommitWriter.close` begins, :class:`ReceiverClosed`.
- :meth:`~GroupCommitWriter.close` writes everything already submitted before returning.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from concurrent.futures import Future
from pathlib import Path
from typing import Callable, Sequence

from tenantry import landing
from tenantry.receiver.errors import LandingWriteError, ReceiverClosed, ReceiverOverloaded

logger = logging.getLogger(__name__)

DEFAULT_FLUSH_INTERVAL_S = 0.05
DEFAULT_FLUSH_BYTES = 8 * 2**20
DEFAULT_MAX_PENDING_BYTES = 64 * 2**20

WriteFn = Callable[[Path, Sequence[tuple[str, bytes]]], Path]


class _Item:
    __slots__ = ("signal", "body", "future", "arrived")

    def __init__(self, signal: str, body: bytes):
        self.signal = signal
        self.body = body
        self.future: Future = Future()
        self.arrived = time.monotonic()


class GroupCommitWriter:
    """Batches submitted requests into durable landing segments (see the module docstring).

    ``write_segment`` is injectable so tests can make the disk fail; it defaults to
    :func:`tenantry.landing.write_segment` and is looked up at write time.
    """

    def __init__(
        self,
        landing_dir: str | Path,
        flush_interval_s: float = DEFAULT_FLUSH_INTERVAL_S,
        flush_bytes: int = DEFAULT_FLUSH_BYTES,
        max_pending_bytes: int = DEFAULT_MAX_PENDING_BYTES,
        write_segment: WriteFn | None = None,
    ):
        self.landing_dir = Path(landing_dir)
        self.flush_interval_s = flush_interval_s
        self.flush_bytes = flush_bytes
        self.max_pending_bytes = max_pending_bytes
        self._write_segment = write_segment
        self._cond = threading.Condition()
        self._pending: deque[_Item] = deque()
        self._pending_bytes = 0
        self._closing = False
        self._draining = False  # stop waiting for the timer: shutdown has begun
        self._thread: threading.Thread | None = None
        self._counters: Counter = Counter()

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> "GroupCommitWriter":
        """Start the writer thread (idempotent)."""
        with self._cond:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="tenantry-landing-writer", daemon=True)
                self._thread.start()
        return self

    def drain(self) -> None:
        """Write whatever is waiting now, and from now on without waiting for the timer
        (shutdown: in-flight requests get their acknowledgement without the group delay)."""
        with self._cond:
            self._draining = True
            self._cond.notify_all()

    def close(self, timeout: float | None = 30.0) -> None:
        """Stop accepting, write everything already submitted, and join the writer thread."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                logger.error("landing writer did not finish within %ss; %d requests unwritten",
                             timeout, len(self._pending))
        else:
            # never started: nothing was written, so nothing submitted may be acknowledged
            self._fail(list(self._pending), ReceiverClosed("the receiver stopped before writing"))

    # -- producers -------------------------------------------------------------------------

    def submit(self, signal: str, body: bytes) -> Future:
        """Queue one request (protobuf bytes) for the next segment; see the module docstring."""
        item = _Item(signal, body)
        with self._cond:
            if self._closing:
                raise ReceiverClosed("the receiver is shutting down; retry the request later")
            if self._pending and self._pending_bytes + len(body) > self.max_pending_bytes:
                self._counters["overloaded"] += 1
                raise ReceiverOverloaded(
                    f"{self._pending_bytes} bytes are already waiting to be written to "
                    f"{self.landing_dir}; retry after a short delay"
                )
            self._pending.append(item)
            self._pending_bytes += len(body)
            self._cond.notify_all()
        return item.future

    def stats(self) -> dict[str, int]:
        """Counters: segments_written, records_written, bytes_written, write_failures, ..."""
        with self._cond:
            out = dict(self._counters)
            out["pending_requests"] = len(self._pending)
            out["pending_bytes"] = self._pending_bytes
        return out

    # -- the writer thread -----------------------------------------------------------------

    def _take_batch(self) -> list[_Item] | None:
        """Block until a batch is due; return it (None when closed and drained)."""
        with self._cond:
            while not self._pending and not self._closing:
                self._cond.wait()
            if not self._pending:
                return None
            deadline = self._pending[0].arrived + self.flush_interval_s
            while not (self._closing or self._draining) and self._pending_bytes < self.flush_bytes:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            batch: list[_Item] = []
            size = 0
            while self._pending and (not batch or size < self.flush_bytes):
                item = self._pending.popleft()
                self._pending_bytes -= len(item.body)
                # A future cancelled before its write means nobody will be told it landed; the
                # client retries, so writing it too would only add a duplicate.
                if item.future.set_running_or_notify_cancel():
                    batch.append(item)
                    size += len(item.body)
                else:
                    self._counters["cancelled_requests"] += 1
            return batch

    def _run(self) -> None:
        while True:
            batch = self._take_batch()
            if batch is None:
                return
            if batch:
                self._write(batch)

    def _write(self, batch: list[_Item]) -> None:
        write = self._write_segment or landing.write_segment
        try:
            path = write(self.landing_dir, [(it.signal, it.body) for it in batch])
        except Exception as e:  # any failure to make the data durable must reach the clients
            logger.exception("writing a landing segment of %d requests to %s failed", len(batch), self.landing_dir)
            with self._cond:
                self._counters["write_failures"] += 1
            self._fail(batch, LandingWriteError(
                f"could not write a landing segment to {self.landing_dir}: {e}; the request was "
                "not stored, retry it"
            ))
            return
        with self._cond:
            self._counters["segments_written"] += 1
            self._counters["records_written"] += len(batch)
            self._counters["bytes_written"] += sum(len(it.body) for it in batch)
        for it in batch:
            it.future.set_result(path)

    @staticmethod
    def _fail(batch: list[_Item], error: Exception) -> None:
        for it in batch:
            if not it.future.done():
                if it.future.running() or it.future.set_running_or_notify_cancel():
                    it.future.set_exception(error)
