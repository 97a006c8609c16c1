"""Running independent work items in parallel: joblib with loky on this
machine, or a dask.distributed cluster through joblib's Dask backend.

Results come back in item order, so they do not depend on the backend or
the number of workers.  No scheduler of our own: joblib does the work.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import itertools
import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Callable, Iterable, Sequence

from ..errors import CarsimError

BACKENDS = ("loky", "dask")
_ACTIVE_BACKEND = "loky"


class BackendError(CarsimError):
    pass


def effective_jobs(n_jobs: int) -> int:
    """Workers for ``n_jobs`` (-1: every core; at most four per core)."""
    cores = os.cpu_count() or 1
    return cores if n_jobs == -1 else max(1, min(n_jobs, cores * 4))


@contextlib.contextmanager
def backend_context(backend: str = "loky", scheduler: str | None = None, n_jobs: int = -1):
    """Configure joblib for ``backend``; for dask, connect a Client to
    ``scheduler`` (an address such as tcp://host:8786) or start a local one."""
    global _ACTIVE_BACKEND
    from joblib import parallel_config  # here, not at import: `carsim run` needs joblib only with workers

    if backend == "loky":
        with parallel_config(backend="loky", n_jobs=effective_jobs(n_jobs)):
            yield
        return
    if backend != "dask":
        raise BackendError(f"unknown backend {backend!r}; expected one of: {', '.join(BACKENDS)}")
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError:
        raise BackendError("the dask backend needs dask.distributed: pip install 'carsim[cluster]'") from None
    if scheduler:
        try:
            client = Client(scheduler, timeout="10s")
        except (OSError, ValueError) as exc:
            raise BackendError(f"cannot reach the dask scheduler at {scheduler}: {exc}") from None
        cluster = None
    else:
        cluster = LocalCluster(n_workers=effective_jobs(n_jobs), threads_per_worker=1, processes=True,
                               dashboard_address=None)
        client = Client(cluster)
    try:
        with parallel_config(backend="dask"):
            _ACTIVE_BACKEND = "dask"
            yield
    finally:
        _ACTIVE_BACKEND = "loky"
        client.close()
        if cluster is not None:
            cluster.close()


def end_with_parent(parent_pid: int, poll_seconds: float = 0.2) -> None:
    """In a worker or child process: exit as soon as ``parent_pid`` is no
    longer its parent (killed, so the child was handed to another process).
    Without this, loky workers and a forked figure process outlive a killed
    command and go on using cores or writing into an unfinished folder."""
    import threading
    import time

    def watch():
        while os.getppid() == parent_pid:
            time.sleep(poll_seconds)
        os._exit(1)

    threading.Thread(target=watch, name="end-with-parent", daemon=True).start()


def workers(n_jobs: int, **options):
    """A joblib ``Parallel`` on the configured backend; local (loky) workers
    end with this process (:func:`end_with_parent`)."""
    from joblib import Parallel

    if _ACTIVE_BACKEND == "loky":
        options.update(initializer=end_with_parent, initargs=(os.getpid(),))
    return Parallel(n_jobs=n_jobs, **options)


def _apply(function: Callable, item):
    return function(item)


def parallel_map(function: Callable, items: Sequence, n_jobs: int = -1, progress: str | None = None,
                 on_result: Callable | None = None) -> list:
    """``[function(item) for item in items]`` in parallel, in order.

    Uses the joblib backend configured by :func:`backend_context` (loky by
    default).  ``on_result(index, result)`` is called as each result arrives
    (in order), e.g. to checkpoint it.  A progress bar is shown on a terminal."""
    jobs = effective_jobs(n_jobs)
    bar = progress_bar(len(items), progress)
    results = []
    counted = False
    # On a dask cluster even one job goes to the cluster; locally one job runs in-process.
    if (jobs == 1 and _ACTIVE_BACKEND != "dask") or len(items) <= 1:
        iterator: Iterable = (function(item) for item in items)
    elif on_result is None and _ACTIVE_BACKEND == "loky" and _CAN_FORK:
        # Forked workers start at once with everything imported (loky's start
        # Python and import carsim first, about a second each).  Their results
        # come back at the end, so not where each must be handled as it comes
        # (``on_result``: checkpoints).
        iterator = fork_map(function, items, jobs, on_done=None if bar is None else bar.update)
        counted = True  # the bar moved as each item was done
    else:
        from joblib import delayed

        # joblib's dask backend puts the task functions in a set: a frozen
        # dataclass holding a scenario hashes its fields and fails (dicts).  A
        # partial of a module function hashes by identity and pickles the same.
        task = functools.partial(_apply, function)
        iterator = workers(jobs, return_as="generator")(delayed(task)(item) for item in items)
    for index, result in enumerate(iterator):
        results.append(result)
        if on_result is not None:
            on_result(index, result)
        if bar is not None and not counted:
            bar.update(1)
    if bar is not None:
        bar.close()
    return results


class Progress:
    """A tqdm bar on stderr that, when closed, leaves one line: what was done and in how long."""

    def __init__(self, total: int | None, label: str, unit: str):
        from tqdm import tqdm

        self.label, self.unit = label, unit
        self.started = time.perf_counter()
        self.bar = tqdm(total=total, desc=label, file=sys.stderr, leave=False, unit=f" {unit}",
                        dynamic_ncols=True)

    def update(self, n: int = 1) -> None:
        self.bar.update(n)

    def close(self) -> None:
        done = self.bar.n
        self.bar.close()
        print(f"{self.label}: {done:,} {self.unit} in {time.perf_counter() - self.started:.1f} s", file=sys.stderr)


def progress_bar(total: int | None, label: str | None, unit: str = "tasks") -> Progress | None:
    """A progress bar on a terminal (None when stderr is not a terminal, or
    with no label, or for a single task); ``total`` None: a counter."""
    if label is None or (total is not None and total <= 1) or not sys.stderr.isatty():
        return None
    return Progress(total, label, unit)


# Forking is safe and cheap on Linux; elsewhere (macOS system libraries,
# Windows) the work runs in the calling process instead.
_CAN_FORK = sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods()


def can_fork() -> bool:
    """Can work be forked safely here (Linux)?"""
    return _CAN_FORK


class _Done:
    def wait(self) -> None:
        return None


class _Forked:
    """``function(*args)`` in a forked child: it starts with the caller's
    memory as it is (nothing pickled) and runs on another core."""

    def __init__(self, function: Callable, args: tuple):
        self._call = (function, args)
        self._process = multiprocessing.get_context("fork").Process(target=_child, args=(*self._call, os.getpid()),
                                                                    daemon=True)
        self._process.start()

    def wait(self) -> None:
        """Wait for the child; if it failed, do the work here, so that the
        error (if it happens again) surfaces as any other."""
        self._process.join()
        if self._process.exitcode != 0:
            function, args = self._call
            function(*args)


def _child(function: Callable, args: tuple, parent_pid: int) -> None:
    # The garbage collector would touch every inherited object, copying the
    # parent's memory page by page; what the child inherits is not its garbage.
    gc.freeze()
    end_with_parent(parent_pid)
    try:
        function(*args)
    except BaseException:  # noqa: BLE001 -- the parent redoes failed work and reports errors and Ctrl-C
        # Ctrl-C too ends here quietly, after the function's own clean-up
        # (a half-written file is removed).
        os._exit(1)


def fork_map(function: Callable, items: Sequence, jobs: int, on_done: Callable | None = None) -> list:
    """``[function(item) for item in items]`` on ``jobs`` processes, in order:
    the items are cut into ``jobs`` consecutive groups, the first done here
    and each other in a forked child (it starts with this process's memory:
    nothing to import or send), whose results come back through a file in
    memory (:func:`_scratch_file`).
    Where forking is not safe, everything runs here.  An item that failed in
    a child is done again here, so that its error surfaces as any other.
    ``on_done()`` is called once per item done (a child's when its results
    arrive), e.g. to move a progress bar."""

    def here(item):  # an item done in this process
        result = function(item)
        if on_done is not None:
            on_done()
        return result

    groups = [list(group) for group in _groups(items, jobs) if len(group)]
    if not _CAN_FORK or len(groups) <= 1:
        return [here(item) for item in items]
    sys.stdout.flush()  # the children must not repeat buffered output
    sys.stderr.flush()
    children = []
    parent = os.getpid()
    try:
        for group in groups[1:]:
            scratch = _scratch_file()
            pid = os.fork()
            if pid == 0:  # the child: compute, send, leave without running the parent's clean-up
                gc.freeze()  # see _child
                end_with_parent(parent)
                try:
                    _write_results([function(item) for item in group], scratch)
                except BaseException:  # noqa: BLE001 -- the parent redoes failed work and reports errors
                    os._exit(1)
                os._exit(0)
            children.append((pid, scratch, group))
        results = [here(item) for item in groups[0]]
        while children:
            pid, scratch, group = children[0]
            _, status = os.waitpid(pid, 0)
            children.pop(0)
            if os.waitstatus_to_exitcode(status) == 0:
                done = _read_results(scratch)
                for _ in range(len(done) if on_done is not None else 0):
                    on_done()
                results += done
            else:
                os.close(scratch)
                results += [here(item) for item in group]
        return results
    finally:
        for pid, scratch, _ in children:  # interrupted or failed here: stop the children not yet collected
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGTERM)
            with contextlib.suppress(OSError):
                os.close(scratch)
            with contextlib.suppress(OSError):
                os.waitpid(pid, 0)


def _scratch_file() -> int:
    """A file descriptor of a new file that no name reaches (so nothing is
    left behind, whatever happens): anonymous memory where the system has
    it, else a temporary file already removed.  A forked child writes its
    results there; the parent maps them.  A pipe moved large results at a
    third of the speed (its small buffer makes the two processes take
    turns)."""
    if hasattr(os, "memfd_create"):
        with contextlib.suppress(OSError):
            return os.memfd_create("carsim-results", os.MFD_CLOEXEC)
    import tempfile

    with tempfile.TemporaryFile() as handle:
        return os.dup(handle.fileno())


_ALIGN = 64  # each array's bytes start at a multiple of this (as numpy allocates them)


def _write_results(results, fd: int) -> None:
    """``results`` into ``fd``: a header (the number of parts and their
    lengths), the pickle, then the arrays' bytes, each written straight from
    its memory (pickle protocol 5, out-of-band buffers: no copy into the
    pickle)."""
    import struct

    payload, buffers = _dumps(results)
    parts = [memoryview(payload), *(buffer.raw() for buffer in buffers)]
    header = struct.pack(f"<{len(parts) + 1}q", len(parts), *(part.nbytes for part in parts))
    with open(fd, "wb", closefd=False) as sink:
        sink.write(header)
        position = len(header)
        for part in parts:
            pad = -position % _ALIGN
            sink.write(bytes(pad))
            sink.write(part)
            position += pad + part.nbytes


def _read_results(fd: int) -> list:
    """What :func:`_write_results` wrote to ``fd`` (which is closed), its
    arrays reading the mapped file in place (a private, copy-on-write
    mapping: writable, and nothing is copied unless written)."""
    import mmap
    import pickle
    import struct

    try:
        size = os.fstat(fd).st_size
        mapped = mmap.mmap(fd, size, access=mmap.ACCESS_COPY)
    finally:
        os.close(fd)
    (n_parts,) = struct.unpack_from("<q", mapped, 0)
    lengths = struct.unpack_from(f"<{n_parts}q", mapped, 8)
    view = memoryview(mapped)
    position, parts = 8 * (n_parts + 1), []
    for length in lengths:
        position += -position % _ALIGN
        parts.append(view[position:position + length])
        position += length
    return pickle.loads(parts[0], buffers=parts[1:])


def _dumps(results) -> tuple[bytes, list]:
    """``results`` pickled (protocol 5) and the out-of-band buffers of its
    arrays; text columns (object arrays of a few distinct strings repeated,
    as the engines write them) as codes and their distinct strings: pickling
    millions of object references one by one costs more than the simulation
    of a large chunk saves by being forked."""
    import io
    import pickle

    import numpy as np

    class Pickler(pickle.Pickler):
        def reducer_override(self, obj):
            if obj.__class__ is np.ndarray and obj.dtype == object and obj.size > 1000:
                coded = _text_codes(obj)
                if coded is not None:
                    return _from_codes, coded
            return NotImplemented

    buffer, buffers = io.BytesIO(), []
    Pickler(buffer, protocol=5, buffer_callback=buffers.append).dump(results)
    return buffer.getvalue(), buffers


def _text_codes(values):
    """(codes, distinct strings, shape) of an object array whose elements are
    all strings, told apart by object (see records.text_codes); else None."""
    import ctypes

    import numpy as np
    import pandas as pd

    flat = np.ascontiguousarray(values).reshape(-1)
    addresses = np.ctypeslib.as_array((ctypes.c_size_t * flat.size).from_address(flat.ctypes.data))
    codes, distinct = pd.factorize(addresses)
    if len(distinct) > 1000:
        return None
    first = np.empty(len(distinct), np.intp)
    first[codes] = np.arange(flat.size)
    texts = flat[first]
    if not all(type(t) is str for t in texts):
        return None
    return codes.astype(np.int32 if len(distinct) < 2**31 else np.int64), texts, values.shape


def _from_codes(codes, texts, shape):
    return texts[codes].reshape(shape)


def _groups(items: Sequence, jobs: int) -> list:
    """``items`` cut into ``jobs`` consecutive groups of nearly equal length."""
    bounds = [round(k * len(items) / jobs) for k in range(jobs + 1)]
    return [items[a:b] for a, b in itertools.pairwise(bounds)]


def active_backend() -> str:
    """The backend parallel work goes to: "loky", or "dask" inside :func:`backend_context`."""
    return _ACTIVE_BACKEND


def run_beside(function: Callable, *args):
    """Start ``function(*args)`` beside the caller (in a forked process where
    that is safe) and return a handle whose ``wait()`` waits for it.  For
    side work whose only results are files."""
    if not _CAN_FORK:
        function(*args)
        return _Done()
    sys.stdout.flush()  # the child must not repeat buffered output
    sys.stderr.flush()
    return _Forked(function, args)
