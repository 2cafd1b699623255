"""Reading a history: every input checked once and put in time order, in bounded memory.

The replay ingests in steps of virtual time, so it needs the events in ``occurred_at`` order,
and files are not in that order (late events, resends, exports by contact). Parsing the whole
file into models to sort it cost about 1.5 KB per event (2.4 GB for 100,000 contacts over three
months), so a history is sorted the way ``sort(1)`` sorts a file larger than memory, with an
external merge sort:

1. The input is read once, one line (or item) at a time, and each is parsed. One that is not
   an event is recorded with its line number (the first ``MAX_REJECTED``, and a count). An
   event becomes one record, ``<UTC time>\\t<line number>\\t<JSON>``: the time as the store's
   fixed-width text, the line number zero-padded, and the line as given (or, for dicts and
   models handed in by a program, the event's canonical JSON). Plain byte order of records is
   therefore (time, line) order: events of one instant keep the order of the input.
2. Records gather in a run of at most ``RUN_BYTES``; a full run is sorted and written to a
   temporary file. A history that fits in one run stays in memory and no file is written.
3. The runs are merged (``heapq.merge``, at most ``FAN_IN`` files open at a time, in rounds
   when there are more) into one sorted file.
4. A replay reads that file front to back (:meth:`EventHistory.window`): records before the
   window are counted by their time alone, those inside are parsed again and handed over in
   order, those after it are counted.

Memory is one run and a read buffer per merged file, whatever the length of the history; the
temporary files take about twice the size of the history while merging, then once, and are
removed by :meth:`EventHistory.close` (or when the history is garbage-collected).

We chose this over an index of ``(occurred_at, file offset)`` pairs (about 40 bytes per event
in Python, so still growing with the history, and a random read per event), and over a
temporary SQLite table (the same external sort, inside SQLite, but SQL outside the store).
Parsing twice (once to check and sort, once to replay) costs about 5 us per event, next to
the 30-40 us the engine spends on it.
"""

from __future__ import annotations

import heapq
import os
import shutil
import tempfile
import weakref
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from ..engine import parse_event
from ..errors import EventError
from ..models import Event, utc_text
from .window import SimulationError

#: A run of records is sorted in memory up to this many bytes of text, then spilled to disk.
RUN_BYTES = 8 * 1024 * 1024
#: Runs merged at once: as many files are open, each with its read buffer.
FAN_IN = 64
#: Lines that are not events, kept with their error (the rest are only counted).
MAX_REJECTED = 1000
_BUFFER = 1 << 16

Item = Event | Mapping[str, Any] | str | bytes


class EventHistory:
    """A history, read once into time order; reusable by several simulations (a comparison).

    Built by :func:`read_events` (a JSON Lines file) or :meth:`from_items` (any iterable of
    events: models, dicts or JSON text). Nothing is read until the history is first used
    (``simulate`` validates the rulesets first, so a bad ruleset costs no reading); then the
    input is read once and sorted on disk (see the module's docstring), and every use after
    that reads the sorted copy.

    ``rejected`` holds ``(line, error)`` for the first ``MAX_REJECTED`` inputs that are not
    events (``line`` counts from 1 in the file, or is the 1-based position in an iterable);
    ``rejected_count`` counts them all; ``count`` is the number of events; ``read`` the inputs
    read (blank lines aside). Close it (or use it as a context manager) to remove its
    temporary files at once.
    """

    def __init__(
        self,
        items: Callable[[], Iterable[Item]],
        *,
        source: str | None = None,
        raw_lines: bool = False,
        run_bytes: int = RUN_BYTES,
        fan_in: int = FAN_IN,
    ) -> None:
        self.source = source
        self.run_bytes, self.fan_in = run_bytes, max(2, fan_in)
        self._items = items
        self._raw_lines = raw_lines  # items are lines of a file: keep them as they are
        self._sorted = False
        self._memory: list[bytes] | None = None  # the sorted records, when they fit in a run
        self._file: Path | None = None  # or the sorted file
        self._folder: str | None = None
        self._cleanup: weakref.finalize[..., Any] | None = None
        self._rejected: list[tuple[int, str]] = []
        self._rejected_count = 0
        self._count = 0
        self._read = 0

    @classmethod
    def from_items(
        cls,
        items: Iterable[Item],
        *,
        source: str | None = None,
        run_bytes: int = RUN_BYTES,
        fan_in: int = FAN_IN,
    ) -> EventHistory:
        """A history of ``items`` (consumed once, when the history is first used).

        ``run_bytes`` and ``fan_in`` tune the sort; the defaults suit any length.
        """
        return cls(lambda: items, source=source, run_bytes=run_bytes, fan_in=fan_in)

    # -- what was read ---------------------------------------------------------------------

    @property
    def rejected(self) -> list[tuple[int, str]]:
        self.sort()
        return self._rejected

    @property
    def rejected_count(self) -> int:
        self.sort()
        return self._rejected_count

    @property
    def count(self) -> int:
        self.sort()
        return self._count

    @property
    def read(self) -> int:
        self.sort()
        return self._read

    @property
    def events(self) -> list[Event]:
        """Every event, in time order, as models in one list: for small histories and tests.

        This holds the whole history in memory, which simulations never do.
        """
        return [_event(record) for record in self._records()]

    def __len__(self) -> int:
        return self.count

    # -- replaying ---------------------------------------------------------------------------

    @contextmanager
    def window(self, start: datetime, end: datetime) -> Iterator[Window]:
        """The events in ``[start, end)``, in time order, handed out as the clock moves."""
        records = self._records()
        try:
            yield Window(records, start, end)
        finally:
            records.close()  # the sorted file, if the window was left before its end

    def _records(self) -> Generator[bytes, None, None]:
        self.sort()
        if self._memory is not None:
            yield from self._memory
            return
        assert self._file is not None
        with self._file.open("rb", buffering=_BUFFER) as stream:
            yield from stream

    # -- sorting -----------------------------------------------------------------------------

    def sort(self) -> EventHistory:
        """Read and sort the input now (else done on first use); idempotent."""
        if self._sorted:
            return self
        runs: list[Path] = []
        run: list[bytes] = []
        size = 0
        for number, item in enumerate(self._items(), start=1):
            if isinstance(item, str | bytes) and not item.strip():
                continue  # a blank line, as ``clm ingest`` skips them
            self._read += 1
            try:
                event = parse_event(item)
            except EventError as error:
                self._rejected_count += 1
                if len(self._rejected) < MAX_REJECTED:
                    self._rejected.append((number, str(error)))
                continue
            if self._raw_lines and isinstance(item, bytes):
                text = item.rstrip(b"\r\n")
            else:
                text = event.model_dump_json().encode()
            record = b"%s\t%012d\t%s\n" % (event.occurred_at_text.encode(), number, text)
            run.append(record)
            size += len(record)
            self._count += 1
            if size >= self.run_bytes:
                runs.append(self._spill(run))
                run, size = [], 0
        run.sort()
        if not runs:
            self._memory = run
        else:
            if run:
                runs.append(self._spill(run))
            self._file = self._merge(runs)
        self._items = _consumed
        self._sorted = True
        return self

    def _spill(self, run: list[bytes]) -> Path:
        run.sort()
        path = self._temporary()
        with path.open("wb", buffering=_BUFFER) as out:
            out.writelines(run)
        return path

    def _merge(self, runs: list[Path]) -> Path:
        while len(runs) > 1:
            merged = []
            for first in range(0, len(runs), self.fan_in):
                group = runs[first : first + self.fan_in]
                merged.append(group[0] if len(group) == 1 else self._merge_files(group))
            runs = merged
        return runs[0]

    def _merge_files(self, paths: list[Path]) -> Path:
        target = self._temporary()
        streams: list[IO[bytes]] = []
        try:
            streams.extend(path.open("rb", buffering=_BUFFER) for path in paths)
            with target.open("wb", buffering=_BUFFER) as out:
                out.writelines(heapq.merge(*streams))
        finally:
            for stream in streams:
                stream.close()
        for path in paths:
            path.unlink()
        return target

    def _temporary(self) -> Path:
        if self._folder is None:
            self._folder = tempfile.mkdtemp(prefix="clm-history-")
            self._cleanup = weakref.finalize(self, shutil.rmtree, self._folder, True)
        handle, name = tempfile.mkstemp(dir=self._folder, suffix=".run")
        os.close(handle)
        return Path(name)

    def close(self) -> None:
        """Remove the temporary files; the history cannot be replayed after this."""
        if self._cleanup is not None:
            self._cleanup()
        self._memory, self._file = [], None

    def __enter__(self) -> EventHistory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Window:
    """A history's events in ``[start, end)``, taken in time order as the clock moves on.

    ``skipped_before`` and ``skipped_after`` count the events outside the window (the latter
    once :meth:`finish` has run), ``taken`` those handed out.
    """

    def __init__(self, records: Iterator[bytes], start: datetime, end: datetime) -> None:
        self._records = records
        self._start = utc_text(start).encode()
        self._end = utc_text(end).encode()
        self._next: bytes | None = None
        self.skipped_before = 0
        self.skipped_after = 0
        self.taken = 0
        for record in records:  # move to the window's first event
            if _key(record) >= self._start:
                self._next = record
                break
            self.skipped_before += 1

    def take_until(self, limit: datetime) -> list[Event]:
        """The events not taken yet that occurred before ``limit`` (and before the end)."""
        until = min(utc_text(limit).encode(), self._end)
        batch: list[Event] = []
        record = self._next
        while record is not None and _key(record) < until:
            batch.append(_event(record))
            record = next(self._records, None)
        self._next = record
        self.taken += len(batch)
        return batch

    def finish(self) -> None:
        """Count what is left (at or after the end: the window is ``[start, end)``)."""
        if self._next is not None:
            self.skipped_after += 1 + sum(1 for _ in self._records)
            self._next = None


def read_events(path: str | os.PathLike[str], **sizes: int) -> EventHistory:
    """The events of a JSON Lines file (the format ``clm ingest`` reads), in time order.

    The file must exist now; it is read when the history is first used (see
    :class:`EventHistory`; ``sizes`` as for :meth:`EventHistory.from_items`).
    """
    path = Path(path)
    if not path.is_file():
        what = "is a directory, not a file" if path.is_dir() else "does not exist"
        raise SimulationError(f"events file {path} {what}")
    return EventHistory(lambda: _lines(path), source=str(path), raw_lines=True, **sizes)


def as_history(events: Any) -> EventHistory:
    """An :class:`EventHistory` from what ``simulate`` accepts: itself, a path, or items."""
    if isinstance(events, EventHistory):
        return events
    if isinstance(events, str | os.PathLike):  # a path: a lone JSON line would be in a list
        return read_events(events)
    return EventHistory.from_items(events)


def _lines(path: Path) -> Iterator[bytes]:
    try:
        with path.open("rb", buffering=_BUFFER) as stream:
            yield from stream
    except OSError as error:
        raise SimulationError(f"cannot read events file {path}: {error.strerror}") from None


def _consumed() -> Iterable[Item]:
    raise AssertionError("a history's input is read once")


def _key(record: bytes) -> bytes:
    return record[: record.index(b"\t")]


def _event(record: bytes) -> Event:
    return parse_event(record.split(b"\t", 2)[2])
