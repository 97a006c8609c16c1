"""Checkpoints for long runs: work items (e.g. PSA draws) are grouped into
chunks, and each finished chunk is written to ``DIR/chunks/`` so that an
interrupted run can be resumed without redoing or losing finished work.

* ``DIR/run.json`` holds the run's fingerprint (scenario hash, seed, number of
  items, patients, chunk size, ...), written when the run starts.  Resuming
  with anything that would change the results is refused with one line.
* ``DIR/chunks/chunk_NNNNN.parquet`` is one finished chunk: its rows, with
  the fingerprint's hash and the chunk's item range in the Parquet metadata.
  It is written under a temporary name and renamed into place, so a chunk
  file that exists is complete; leftovers of an interrupted write
  (``.chunk_*.part``) are removed when the run is resumed.
* ``DIR/chunks/chunk_NNNNN.sha256`` holds the SHA-256 of the chunk's bytes
  (and of its extras), written before the chunk: a chunk whose bytes no
  longer match (a damaged disk, a stray edit) is never read; it is removed
  and recomputed, with a one-line notice.
* Optional per-chunk extras (e.g. patient tables) go to ``DIR/<name>/`` and
  are written *before* the chunk file, which is the chunk's completion mark.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .._io import atomic_write
from ..errors import CarsimError, display_path

RUN_FILE = "run.json"
CHUNKS = "chunks"
_META_KEY = b"carsim_checkpoint"


class CheckpointError(CarsimError):
    pass


def fingerprint_hash(fingerprint: dict) -> str:
    return hashlib.sha256(json.dumps(fingerprint, sort_keys=True, default=str).encode("utf-8")).hexdigest()


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def default_chunk_size(n_items: int) -> int:
    """About 20 checkpoints per run, 1 to 25 items each."""
    return max(1, min(25, math.ceil(n_items / 20)))


def read_run_file(folder) -> dict:
    """The stored ``run.json`` of a checkpointed run (for resuming)."""
    path = Path(folder) / RUN_FILE
    if not path.is_file():
        raise CheckpointError(f"{display_path(folder)}: nothing to resume (no {RUN_FILE}); "
                              "start the run with --out instead")
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
        info["fingerprint"]["items"]
        info["fingerprint"]["chunk_size"]
    except (ValueError, KeyError, TypeError):
        raise CheckpointError(f"{display_path(path)}: damaged run file; start again with another --out") from None
    return info


def _describe(value) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 40 else text[:12] + "..."


class Checkpoint:
    """Chunked, resumable storage of one run's results in ``folder``."""

    def __init__(self, folder: Path, fingerprint: dict, notice: Callable[[str], None] | None = None):
        self.folder = Path(folder)
        self.notice = notice or (lambda text: print(f"carsim: notice: {text}", file=sys.stderr))
        self.fingerprint = dict(fingerprint)
        self.n_items = int(fingerprint["items"])
        self.chunk_size = int(fingerprint["chunk_size"])
        self.hash = fingerprint_hash(self.fingerprint)

    # ----------------------------------------------------------------- opening
    @classmethod
    def open(cls, folder, fingerprint: dict, resume: bool) -> Checkpoint:
        """Start a new run in ``folder`` or, with ``resume``, continue the one
        there (whose fingerprint must equal ``fingerprint``).

        ``fingerprint`` must contain ``items`` and ``chunk_size``; every other
        key is compared as is when resuming."""
        folder = Path(folder)
        where = display_path(folder)
        if resume:
            stored = read_run_file(folder)["fingerprint"]
            if stored != fingerprint:
                keys = [k for k in sorted(set(stored) | set(fingerprint)) if stored.get(k) != fingerprint.get(k)]
                what = "; ".join(f"{k} was {_describe(stored.get(k))}, now {_describe(fingerprint.get(k))}"
                                 for k in keys)
                raise CheckpointError(f"{where}: cannot resume a different run ({what})")
            checkpoint = cls(folder, fingerprint)
            checkpoint._remove_partial_files()
            return checkpoint
        if (folder / RUN_FILE).exists():
            raise CheckpointError(f"{where} already holds a run; continue it with --resume {where} "
                                  "or choose another --out")
        if folder.exists() and any(folder.iterdir()):
            raise CheckpointError(f"{where} is not empty; choose another --out")
        checkpoint = cls(folder, fingerprint)
        info = {"fingerprint": fingerprint, "hash": checkpoint.hash,
                "created": _dt.datetime.now().astimezone().isoformat(timespec="seconds")}
        atomic_write(folder / RUN_FILE, lambda p: p.write_text(json.dumps(info, indent=2) + "\n"))
        return checkpoint

    def _remove_partial_files(self) -> None:
        for path in self.folder.rglob(".*.part"):
            path.unlink(missing_ok=True)

    # ------------------------------------------------------------------ layout
    @property
    def n_chunks(self) -> int:
        return math.ceil(self.n_items / self.chunk_size)

    def chunk_of(self, item: int) -> int:
        return item // self.chunk_size

    def chunk_items(self, chunk: int) -> range:
        return range(chunk * self.chunk_size, min(self.n_items, (chunk + 1) * self.chunk_size))

    def chunk_path(self, chunk: int, kind: str = CHUNKS) -> Path:
        return self.folder / kind / f"chunk_{chunk:05d}.parquet"

    # ----------------------------------------------------------------- reading
    def digest_path(self, chunk: int) -> Path:
        return self.folder / CHUNKS / f"chunk_{chunk:05d}.sha256"

    def _check_chunk(self, chunk: int) -> bool:
        """True when the chunk's file exists, is intact and belongs to this run.
        A damaged chunk (bytes that do not match the digest written with it,
        or an unreadable file) is removed, so that it is recomputed."""
        path = self.chunk_path(chunk)
        if not path.exists():
            return False
        info = None
        try:
            digests = json.loads(self.digest_path(chunk).read_text(encoding="utf-8"))
            intact = CHUNKS in digests and all(_sha256(self.chunk_path(chunk, kind)) == digest
                                               for kind, digest in digests.items())
            if intact:
                info = json.loads((pq.read_schema(path).metadata or {})[_META_KEY])
        except Exception:  # noqa: BLE001 - a missing digest or an unreadable file: damaged either way
            intact = False
        if not intact:
            self.notice(f"{display_path(path)}: damaged checkpoint (its bytes do not match the digest written "
                        "with it); it is removed and that chunk recomputed")
            for kind_path in [path, self.digest_path(chunk), *self.folder.glob(f"*/chunk_{chunk:05d}.parquet")]:
                kind_path.unlink(missing_ok=True)
            return False
        expected = {"hash": self.hash, "chunk": chunk, "start": self.chunk_items(chunk).start,
                    "stop": self.chunk_items(chunk).stop}
        if info != expected:
            raise CheckpointError(f"{display_path(path)}: checkpoint file of another run; delete it to "
                                  "recompute that chunk")
        return True

    def done_chunks(self) -> list[int]:
        return [k for k in range(self.n_chunks) if self._check_chunk(k)]

    def pending_items(self) -> list[int]:
        done = set(self.done_chunks())
        return [i for k in range(self.n_chunks) if k not in done for i in self.chunk_items(k)]

    def read_chunk(self, chunk: int, kind: str = CHUNKS) -> pd.DataFrame:
        path = self.chunk_path(chunk, kind)
        # Text columns read dictionary-encoded and turned into object columns
        # that share one string object per distinct value: a few bytes a row
        # instead of a string each (the labels repeat on every row).
        text = [field.name for field in pq.read_schema(path) if pa.types.is_string(field.type)]
        frame = pq.read_table(path, read_dictionary=text).to_pandas()
        return frame.astype({name: object for name in text})

    def read_all(self) -> pd.DataFrame:
        """Every chunk's rows, in item order (all chunks must be done)."""
        missing = [k for k in range(self.n_chunks) if not self._check_chunk(k)]
        if missing:
            raise CheckpointError(f"{display_path(self.folder)}: {len(missing)} chunk(s) not finished")
        return pd.concat([self.read_chunk(k) for k in range(self.n_chunks)], ignore_index=True)

    # ----------------------------------------------------------------- writing
    def write_chunk(self, chunk: int, frame: pd.DataFrame, extras: dict[str, pd.DataFrame] | None = None) -> None:
        """Write the extras, the digests, then the chunk file (the completion mark)."""
        digests = {}
        for kind, extra in (extras or {}).items():
            if extra is not None:
                atomic_write(self.chunk_path(chunk, kind), lambda p, e=extra: e.to_parquet(p, index=False))
                digests[kind] = _sha256(self.chunk_path(chunk, kind))
        items = self.chunk_items(chunk)
        table = pa.Table.from_pandas(frame, preserve_index=False)
        info = {"hash": self.hash, "chunk": chunk, "start": items.start, "stop": items.stop}
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), _META_KEY: json.dumps(info)})
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        data = sink.getvalue().to_pybytes()
        digests[CHUNKS] = hashlib.sha256(data).hexdigest()
        atomic_write(self.digest_path(chunk), lambda p: p.write_text(json.dumps(digests) + "\n"))
        atomic_write(self.chunk_path(chunk), lambda p: p.write_bytes(data))

    def collector(self, items: list[int]) -> Callable:
        """``add(index, frame, extras)`` for results of ``items`` (in any order):
        buffers them and writes each chunk as soon as all its items are in,
        then drops it from memory."""
        waiting = {k: set(self.chunk_items(k)) for k in {self.chunk_of(i) for i in items}}
        buffers: dict[int, dict[int, tuple]] = {k: {} for k in waiting}

        def add(index: int, frame: pd.DataFrame, extras: dict[str, pd.DataFrame] | None = None) -> None:
            item = items[index]
            chunk = self.chunk_of(item)
            buffers[chunk][item] = (frame, extras or {})
            if len(buffers[chunk]) == len(waiting[chunk]):
                parts = [buffers[chunk][i] for i in sorted(buffers[chunk])]
                kinds = {kind for _, ex in parts for kind, value in ex.items() if value is not None}
                merged = {kind: pd.concat([ex[kind] for _, ex in parts if ex.get(kind) is not None],
                                          ignore_index=True) for kind in kinds}
                self.write_chunk(chunk, pd.concat([f for f, _ in parts], ignore_index=True), merged)
                del buffers[chunk]

        return add
