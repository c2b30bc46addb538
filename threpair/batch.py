"""Batch restore: many clips in, a mirrored folder of repaired clips out, one bad file at a time.

    jobs = plan_jobs(["generated/"], Path("fixed"), overwrite=False, shard=parse_shard("2/8"))
    stop = threading.Event()
    process = RestoreProcess(lambda: Passthrough(), cfg, stop=stop)
    result = run_jobs(jobs, process, Path("run.jsonl"), jobs_parallel=2, stop=stop)
    sys.exit(1 if result.failed else 0)          # (the CLI does this; the library never exits)

Planning (`plan_jobs`) only looks at the file system. Inputs are folders, files or glob
patterns the shell did not expand; each input's path *relative to its argument* is mirrored
under the output folder (`gen/a/x.mp4` given as folder `gen` -> `OUT/a/x.mp4`). Folders are
searched recursively. Finished outputs are skipped on the next run: outputs are written
atomically (a hidden temp file renamed on success), so an output that exists is complete.

Running (`run_jobs`) catches every error of a file, records it and goes on; only Ctrl-C (or
SIGTERM under `interrupt_on_sigterm`) stops the batch, and then `BatchInterrupted` is raised
after the running files were cleaned up and logged. A JSON-lines log gets one line per file,
written with a single append as soon as the file ends, so a killed batch keeps its log.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import glob
import hashlib
import json
import os
import queue
import re
import signal
import socket
import threading
import time
import traceback
import unicodedata
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from threpair.config import PipelineConfig
from threpair.errors import InputError, ThrepairError
from threpair.video import VIDEO_SUFFIXES

JobStatus = Literal["todo", "skipped"]
RowStatus = Literal["done", "skipped", "failed", "interrupted"]
Process = Callable[["Job"], dict]
EventFn = Callable[[dict], None]

_MAGIC = re.compile(r"[*?[]")


# ---------------------------------------------------------------- planning (no side effects)


@dataclass(frozen=True)
class Job:
    """One file to restore. `name` is the relative path (POSIX separators) mirrored under the
    output folder; it is also what `--shard` hashes, so it is the same on every machine."""

    input: Path
    output: Path
    name: str
    status: JobStatus = "todo"


def parse_shard(text: str) -> tuple[int, int]:
    """ "I/N" -> (I, N), 1 <= I <= N: this machine's share is shard I of N (1-based).

    Raises InputError on anything else. From a SLURM array started at 0:
    `--shard $((SLURM_ARRAY_TASK_ID + 1))/$SLURM_ARRAY_TASK_COUNT`.
    """
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if m is None or not 1 <= int(m.group(1)) <= int(m.group(2)):
        raise InputError(f"--shard {text}: use I/N with 1 <= I <= N (1-based), e.g. --shard 2/8")
    return int(m.group(1)), int(m.group(2))


def shard_of(name: str, count: int) -> int:
    """The 1-based shard (of `count`) a relative name belongs to: a stable hash, not the position,
    so adding or removing files never moves other files between shards. Names are compared in
    Unicode NFC, so macOS (NFD) and Linux machines agree on accented names."""
    key = unicodedata.normalize("NFC", name).encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "big") % count + 1


def has_glob_magic(text: str) -> bool:
    return _MAGIC.search(text) is not None


def is_single_file(inputs: Sequence[str | os.PathLike], output: str | os.PathLike) -> bool:
    """Whether `restore IN OUT` means "this one file to that file" (the original behaviour):
    one input that is not a folder or glob pattern, and an output with a file extension that
    is not an existing folder (nor written with a trailing slash)."""
    if len(inputs) != 1:
        return False
    src, out = str(inputs[0]), str(output)
    if Path(src).is_dir() or (not Path(src).exists() and has_glob_magic(src)):
        return False
    if out.endswith(("/", os.sep)) or Path(out).is_dir():
        return False
    return Path(out).suffix != ""


def _is_video(path: str) -> bool:
    return os.path.splitext(path)[1].lower() in VIDEO_SUFFIXES


def _hidden(name: str) -> bool:
    return name.startswith(".")


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _nested_output(root: Path, out_root: Path) -> Path | None:
    """`out_root` when it lies strictly inside folder `root` (so searching `root` must leave
    it out, or a rerun would restore the outputs again), else None."""
    root = root.resolve()
    return out_root if out_root != root and root in out_root.parents else None


def _walk(root: Path, base: Path, out_root: Path) -> Iterator[tuple[Path, str]]:
    """Videos under `root` (recursive; hidden files and folders, and an output folder nested
    inside, left out; symlinked folders are not followed), as (path, name relative to `base`)."""
    skip = _nested_output(root, out_root)
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(
            d
            for d in dirnames
            if not _hidden(d) and (skip is None or Path(dirpath, d).resolve() != skip)
        )
        for f in sorted(filenames):
            if not _hidden(f) and _is_video(f):
                path = Path(dirpath, f)
                yield path, Path(os.path.relpath(path, base)).as_posix()


def _glob_base(pattern: str) -> Path:
    """The leading folders of a pattern that hold no wildcard: what matches are relative to."""
    parts = Path(pattern).parts
    fixed = []
    for p in parts[:-1]:
        if has_glob_magic(p):
            break
        fixed.append(p)
    return Path(*fixed) if fixed else Path(".")


def _expand(arg: str | os.PathLike, out_root: Path) -> list[tuple[Path, str]]:
    """One command-line input -> (video path, mirrored name) pairs. Raises InputError."""
    text, path = str(arg), Path(arg)
    if path.is_dir():
        if path.resolve() == out_root:
            raise InputError(f"{path}: the output folder is the input folder; choose another")
        found = list(_walk(path, path, out_root))
        if not found:
            raise InputError(f"{path}: folder holds no videos ({', '.join(VIDEO_SUFFIXES)})")
        return found
    if path.exists():
        return [(path, path.name)]
    if has_glob_magic(text):
        base = _glob_base(text)
        skip = _nested_output(base, out_root)
        found = []
        for match in sorted(glob.glob(text, recursive=True)):
            m = Path(match)
            if skip is not None and _inside(m.resolve(), skip):
                continue
            if m.is_dir():
                found += _walk(m, base, out_root)
            elif _is_video(match):
                found.append((m, Path(os.path.relpath(m, base)).as_posix()))
        if not found:
            raise InputError(f"{text}: pattern matches no videos ({', '.join(VIDEO_SUFFIXES)})")
        return found
    raise InputError(f"{path}: no such file")


def find_videos(inputs: Sequence[str | os.PathLike]) -> list[Path]:
    """The videos named by files, folders (searched recursively) and glob patterns, in the
    order given, each once. Raises InputError for a missing path or an empty folder."""
    found: dict[Path, None] = {}
    for arg in inputs:
        for path, _ in _expand(arg, Path(os.devnull)):
            found.setdefault(path, None)
    if not found:
        raise InputError("no videos given")
    return list(found)


def plan_jobs(
    inputs: Sequence[str | os.PathLike],
    output: str | os.PathLike,
    overwrite: bool = False,
    shard: tuple[int, int] | None = None,
) -> list[Job]:
    """The jobs of a batch, sorted by name; `status` is "skipped" where the output exists
    (unless `overwrite`). Nothing is created or written.

    Each input is a folder (every video in it and its subfolders, name = path relative to the
    folder), a file (name = its file name, whatever its extension) or a glob pattern the shell
    left unexpanded (quoted; `**` recurses; name = path relative to the pattern's leading
    folders). Folders and patterns take files ending in .mp4 .mov .mkv .avi .webm .m4v (any
    case) and skip hidden files (e.g. threpair's own temp files). The output folder is left
    out when it lies inside an input folder. `shard=(i, n)` keeps the files whose name hashes
    to shard i of n (see `shard_of`); every machine must be given the same inputs.

    Raises InputError for a missing input, an input folder or pattern without videos, an
    output that is an existing file or an input folder, two inputs that would write the same
    output, and an output that would overwrite an input.
    """
    if not inputs:
        raise InputError("no input videos given")
    out_dir = Path(output)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(
            f"{out_dir}: is a file; with a folder or several inputs the output must be a folder"
        )
    out_root = out_dir.resolve()
    by_input: dict[Path, tuple[Path, str]] = {}
    for arg in inputs:
        for path, name in _expand(arg, out_root):
            by_input.setdefault(path.resolve(), (path, name))  # a file given twice runs once
    by_name: dict[str, Path] = {}
    for path, name in by_input.values():
        if name in by_name:
            raise InputError(
                f"{by_name[name]} and {path} would both be written to {out_dir / name}; pass "
                "their common folder instead, or quote the glob so threpair expands it"
            )
        by_name[name] = path
    jobs = []
    for name in sorted(by_name):
        if shard is not None and shard_of(name, shard[1]) != shard[0]:
            continue
        src, dst = by_name[name], out_dir / name
        if dst.resolve() in by_input:
            raise InputError(f"{src}: its output {dst} would overwrite an input; choose another")
        skipped = dst.exists() and not overwrite
        jobs.append(Job(src, dst, name, "skipped" if skipped else "todo"))
    return jobs


def ensure_output_dir(output: str | os.PathLike) -> Path:
    """Create the output folder (with parents) and check it is writable; InputError if not."""
    out_dir = Path(output)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"{out_dir}: cannot create the output folder ({e.strerror})") from None
    if not os.access(out_dir, os.W_OK):
        raise InputError(f"{out_dir}: output folder is not writable")
    return out_dir


# ---------------------------------------------------------------- running


class Cancelled(BaseException):
    """Raised inside a job when the batch is stopping. A BaseException, like KeyboardInterrupt,
    so that `except Exception` in user code does not swallow it."""


class BatchInterrupted(KeyboardInterrupt):
    """The batch was stopped (Ctrl-C / SIGTERM); `result` holds what was finished and logged.

    A KeyboardInterrupt, so code that handles Ctrl-C handles this too."""

    def __init__(self, result: BatchResult) -> None:
        super().__init__("batch interrupted")
        self.result = result


@dataclass
class JobResult:
    """How one file went. `info` is what the process returned (frames, faces, confidence,
    warnings, timings); `error` is the exception type of a failure, `reason` its message."""

    job: Job
    status: RowStatus
    reason: str = ""
    error: str = ""
    seconds: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)
    traceback: str = ""  # only for errors that are not ThrepairErrors (bugs): report these

    @property
    def frames(self) -> int:
        return int(self.info.get("frames", 0))

    @property
    def warnings(self) -> list[str]:
        return list(self.info.get("warnings", []))

    def record(self) -> dict[str, Any]:
        """The JSON-lines log record of this file."""
        rec: dict[str, Any] = {
            "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "name": self.job.name,
            "input": str(self.job.input),
            "output": str(self.job.output),
            "status": self.status,
            "reason": self.reason,
            "error": self.error,
            "seconds": round(self.seconds, 3),
        }
        rec.update(self.info)
        if self.traceback:
            rec["traceback"] = self.traceback
        return rec


@dataclass
class BatchResult:
    """All files of a batch, in job order; `pending` counts jobs never started (interrupted)."""

    rows: list[JobResult]
    seconds: float
    pending: int = 0

    @property
    def counts(self) -> dict[str, int]:
        c = {s: 0 for s in ("done", "skipped", "failed", "interrupted")}
        for r in self.rows:
            c[r.status] += 1
        c["pending"] = self.pending
        return c

    @property
    def failed(self) -> bool:
        """True when any file failed: the exit code should say so."""
        return any(r.status == "failed" for r in self.rows)

    @property
    def failures(self) -> list[JobResult]:
        return [r for r in self.rows if r.status == "failed"]

    @property
    def frames(self) -> int:
        return sum(r.frames for r in self.rows if r.status == "done")

    def summary(self) -> str:
        """One line: '12 done, 3 skipped, 2 failed; 4810 frames in 3.2 min'."""
        parts = [f"{n} {k}" for k, n in self.counts.items() if n or k in ("done", "failed")]
        return f"{', '.join(parts)}; {self.frames} frames in {self.seconds / 60:.1f} min"


class JsonLinesLog:
    """Append-only JSON-lines file: each record is one `write` on an O_APPEND descriptor, so
    a killed run keeps every finished line, and processes on one machine appending to the same
    file do not interleave lines (on network file systems, give each machine its own log)."""

    def __init__(self, path: str | os.PathLike | None) -> None:
        self.path = Path(path) if path is not None else None
        self._fd: int | None = None
        self._lock = threading.Lock()

    def __enter__(self) -> JsonLinesLog:
        if self.path is not None:
            try:
                flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT
                self._fd = os.open(self.path, flags, 0o644)
            except OSError as e:
                raise InputError(f"{self.path}: cannot write the log ({e.strerror})") from None
        return self

    def write(self, record: dict) -> None:
        if self._fd is None:
            return
        data = (json.dumps(record, default=str, ensure_ascii=False) + "\n").encode()
        with self._lock:
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view) :]

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _first_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[0] if lines else ""


def run_one(job: Job, process: Process, stop: threading.Event) -> JobResult:
    """Run one todo job; every outcome becomes a JobResult (only Ctrl-C also sets `stop`)."""
    t0 = time.perf_counter()

    def row(status: RowStatus, reason: str = "", error: str = "", **kw: Any) -> JobResult:
        return JobResult(job, status, reason, error, time.perf_counter() - t0, **kw)

    try:
        info = dict(process(job) or {})
    except (Cancelled, KeyboardInterrupt):
        stop.set()
        return row("interrupted", "stopped by Ctrl-C or SIGTERM; rerun to redo this file")
    except ThrepairError as e:
        if stop.is_set():  # e.g. ffmpeg killed by the same Ctrl-C
            return row("interrupted", str(e), type(e).__name__)
        return row("failed", str(e), type(e).__name__)
    except Exception as e:
        if stop.is_set():
            return row("interrupted", f"{type(e).__name__}: {_first_line(str(e))}")
        reason = f"{job.input}: unexpected {type(e).__name__}: {_first_line(str(e))}"
        return row("failed", reason, type(e).__name__, traceback=traceback.format_exc())
    return row("done", info=info)


def run_jobs(
    jobs: Sequence[Job],
    process: Process,
    log_path: str | os.PathLike | None = None,
    jobs_parallel: int = 1,
    on_event: EventFn | None = None,
    stop: threading.Event | None = None,
) -> BatchResult:
    """Run every "todo" job with `process(job) -> info dict`, record the others as skipped.

    A file's error (ThrepairError or any other Exception) is recorded as "failed" with its
    message and the batch goes on; `BatchResult.failed` tells the caller. Ctrl-C (or `stop`
    being set) stops the batch: running files end as "interrupted" (the atomic writer removes
    their temp output), files not started stay pending, and BatchInterrupted is raised with
    the result. Each file appends one record to the JSON-lines `log_path` when it ends.
    `on_event` gets {"event": "start", ...} and {"event": "end", **record} dicts, serialised
    (but from worker threads when `jobs_parallel` > 1).

    `jobs_parallel` > 1 runs files in threads, not processes: decoding, encoding and the
    detector run in ffmpeg subprocesses / onnxruntime / torch, which release the GIL, so
    threads overlap as well as processes would, while sharing one CUDA context and loaded
    weights, needing no pickling of models, and letting Ctrl-C reach every running file (via
    `stop`, which the process checks: see RestoreProcess). `process` must be thread-safe;
    RestoreProcess gives each concurrent file its own model (hysteresis is per-model state).
    """
    if jobs_parallel < 1:
        raise InputError(f"--jobs {jobs_parallel}: use 1 or more")
    stop = stop if stop is not None else threading.Event()
    t0 = time.perf_counter()
    rows: list[JobResult | None] = [None] * len(jobs)
    event_lock = threading.Lock()

    with JsonLinesLog(log_path) as log:

        def emit(event: dict) -> None:
            if on_event is not None:
                with event_lock:
                    on_event(event)

        def finish(i: int, result: JobResult) -> None:
            rows[i] = result
            record = result.record()
            log.write(record)
            emit({"event": "end", "index": i, "total": len(jobs), **record})

        def work(i: int) -> None:
            if stop.is_set():
                return
            emit({"event": "start", "index": i, "total": len(jobs), "name": jobs[i].name})
            finish(i, run_one(jobs[i], process, stop))

        try:
            todo = []
            for i, job in enumerate(jobs):
                if job.status == "skipped":
                    finish(i, JobResult(job, "skipped", f"{job.output} exists (use --overwrite)"))
                else:
                    todo.append(i)
            if jobs_parallel == 1 or len(todo) <= 1:
                for i in todo:
                    work(i)
            else:
                _run_threads(todo, work, jobs_parallel, stop)
        except KeyboardInterrupt:
            stop.set()
    result = BatchResult([r for r in rows if r is not None], time.perf_counter() - t0)
    result.pending = len(jobs) - len(result.rows)
    if stop.is_set():
        raise BatchInterrupted(result)
    return result


def _run_threads(
    todo: list[int], work: Callable[[int], None], workers: int, stop: threading.Event
) -> None:
    """Run `work(i)` for each i on `workers` threads; on Ctrl-C set `stop`, drop the jobs not
    started and wait for the running ones to wind down (they see `stop` within a frame batch)."""
    pool = cf.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="threpair-batch")
    futures = [pool.submit(work, i) for i in todo]
    try:
        pending = set(futures)
        while pending:  # wait with a timeout so Ctrl-C is seen promptly
            _, pending = cf.wait(pending, timeout=0.5, return_when=cf.FIRST_COMPLETED)
    except KeyboardInterrupt:
        stop.set()
        for f in futures:
            f.cancel()
    finally:
        while True:
            try:
                pool.shutdown(wait=True)
                break
            except KeyboardInterrupt:  # a second Ctrl-C: still let running files clean up
                stop.set()
    for f in futures:
        if not f.cancelled() and f.exception() is not None:  # a bug in work() itself
            raise f.exception()  # type: ignore[misc]


# ---------------------------------------------------------------- the restore process


def summary_info(summary: Any) -> dict[str, Any]:
    """The per-file numbers of a RestoreSummary worth logging (no per-frame records)."""
    skip = ("per_frame", "input", "output", "seconds")
    info = {k: v for k, v in asdict(summary).items() if k not in skip}
    info["timings"] = {k: round(v, 3) for k, v in summary.seconds.items()}
    return info


class RestoreProcess:
    """`process` for run_jobs that runs restore_video on a job.

    `model_factory()` builds a FaceModel; one is built now (so a bad checkpoint or detector
    fails before the batch starts, as an error of the whole command) and more only when files
    run concurrently: each running file borrows a (model, detector) pair from a pool, because
    identity models keep per-sequence state (code hysteresis, last confidence stats).
    `stop` is checked on every progress tick; when set, the file stops with Cancelled and the
    writer deletes its temp output. `on_summary(job, summary)`, if given, gets each file's
    RestoreSummary after it was written (an error there fails that file).
    """

    def __init__(
        self,
        model_factory: Callable[[], Any],
        cfg: PipelineConfig | None = None,
        batch_size: int | None = None,
        detector_factory: Callable[[], Any] | None = None,
        stop: threading.Event | None = None,
        on_summary: Callable[[Job, Any], None] | None = None,
    ) -> None:
        from threpair.detect import make_detector

        self.on_summary = on_summary

        self.cfg = cfg or PipelineConfig()
        self.batch_size = batch_size
        self.stop = stop if stop is not None else threading.Event()
        self._model_factory = model_factory
        self._detector_factory = detector_factory or (lambda: make_detector(self.cfg.detect))
        self._pool: queue.SimpleQueue = queue.SimpleQueue()
        self._pool.put(self._new_pair())

    def _new_pair(self) -> tuple[Any, Any]:
        return self._model_factory(), self._detector_factory()

    def _check(self, stage: str, done: int, total: int) -> None:
        if self.stop.is_set():
            raise Cancelled()

    def __call__(self, job: Job) -> dict[str, Any]:
        from threpair.restore import restore_video

        try:
            job.output.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise InputError(
                f"{job.output.parent}: cannot create the output folder ({e.strerror})"
            ) from None
        try:
            pair = self._pool.get_nowait()
        except queue.Empty:
            pair = self._new_pair()
        model, detector = pair
        try:
            summary = restore_video(
                job.input, job.output, model, self.cfg, self.batch_size, detector, self._check
            )
        finally:
            stats = getattr(model, "frame_stats", None)
            if isinstance(stats, list):
                stats.clear()  # grows by one record per frame; a batch would accumulate it
            self._pool.put(pair)
        if self.on_summary is not None:  # e.g. the HTML report page of this file
            self.on_summary(job, summary)
        return summary_info(summary)


_received: list[str] = []  # names of the signals interrupt_on_sigterm turned into Ctrl-C


def received_signal() -> str | None:
    """The last SIGTERM/SIGHUP caught by `interrupt_on_sigterm` in this process, if any.

    A signal landing inside a third-party import can come out as another error (onnxruntime
    turns it into an ImportError); the CLI asks this to report it as the interruption it was.
    """
    return _received[-1] if _received else None


@contextlib.contextmanager
def interrupt_on_sigterm() -> Iterator[None]:
    """Treat SIGTERM and SIGHUP like Ctrl-C while the block runs (main thread only; a no-op
    elsewhere). The KeyboardInterrupt raised carries the signal's name as its argument.

    Job schedulers stop jobs with SIGTERM (SLURM on scancel or time limit, then SIGKILL after
    KillWait; GNU parallel on --timeout/--halt); a closed terminal sends SIGHUP. Python's
    default is to die at once, leaving a hidden temp file and no log line for the running
    file; this lets them be cleaned up.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        _received.append(signal.Signals(signum).name)
        raise KeyboardInterrupt(signal.Signals(signum).name)

    caught = [signal.SIGTERM] + ([signal.SIGHUP] if hasattr(signal, "SIGHUP") else [])
    previous = {sig: signal.signal(sig, handler) for sig in caught}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
