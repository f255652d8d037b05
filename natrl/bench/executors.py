"""Running a sweep's jobs: one fresh subprocess at a time, or as Ray tasks.

Both executors hand every finished row to an ``on_row`` callback (which writes
the results files incrementally) and keep a :class:`Progress` display.

* :func:`run_sequential` starts each job in a fresh ``spawn`` subprocess, one
  after another, so that a crash, a leaked thread setting or a warm cache of one
  job cannot affect the next; a worker that dies without a result is recorded
  as failed with its exit code.
* :func:`run_ray` submits every job as a Ray task with ``num_cpus=1`` (Ray then
  runs at most one job per CPU and sets ``OMP_NUM_THREADS=1`` for it) and
  ``max_calls=1`` (a fresh worker process per job, as without Ray). Ray is
  started in-process, every process of it listening on the loopback address
  alone, or joined at ``address`` (:func:`natrl.cluster.connect`: an address
  that does not answer is refused at once).
"""

from __future__ import annotations

import importlib.util
import multiprocessing as mp
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from natrl.bench.jobs import BenchError, Job
from natrl.bench.worker import failed_row, run_job

__all__ = ["Progress", "format_duration", "run_ray", "run_sequential"]

Row = dict[str, Any]
OnRow = Callable[[Job, Row], None]


def format_duration(seconds: float) -> str:
    """``75.2`` → ``1m15s``; ``3725`` → ``1h02m05s``."""
    s = round(seconds)
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    if h:
        return f"{h}h{m:02d}m{s:02d}s"
    return f"{m}m{s:02d}s" if m else f"{s}s"


class Progress:
    """The sweep's progress display: one line per finished job, a status line now and then.

    Args:
        total: number of jobs.
        stream: where lines go (stderr by default); None to stay silent.
    """

    def __init__(self, total: int, stream: TextIO | None = sys.stderr) -> None:
        self.total = total
        self.stream = stream
        self.t0 = time.perf_counter()
        self.done = 0
        self.failed = 0
        self.running: dict[int, tuple[Job, float]] = {}

    def _emit(self, text: str) -> None:
        if self.stream is not None:
            print(text, file=self.stream, flush=True)

    def elapsed(self) -> float:
        """Seconds since the sweep started."""
        return time.perf_counter() - self.t0

    def status(self) -> str:
        """``done 3/10, running 1, left 6, elapsed 1m20s``."""
        left = self.total - self.done - len(self.running)
        failed = f" ({self.failed} failed)" if self.failed else ""
        return (
            f"done {self.done}/{self.total}{failed}, running {len(self.running)}, left {left}, "
            f"elapsed {format_duration(time.perf_counter() - self.t0)}"
        )

    def started(self, job: Job) -> None:
        self.running[job.index] = (job, time.perf_counter())

    def finished(self, job: Job, row: Row) -> None:
        self.running.pop(job.index, None)
        self.done += 1
        if row.get("status") == "ok":
            thr = ""
            if row.get("threshold") is not None:
                thr = (
                    f", threshold at {row['threshold_steps']:,} steps / {row['threshold_seconds']:.1f}s"
                    if row.get("threshold_steps") is not None
                    else ", threshold not reached"
                )
            what = (
                f"{row['steps']:,} steps, {row['train_seconds']:.1f}s ({row['steps_per_second']:,.0f} steps/s), "
                f"eval {row['final_eval_mean']:.1f} ± {row['final_eval_std']:.1f}{thr}"
            )
        else:
            self.failed += 1
            what = f"FAILED: {row.get('error')}"
        self._emit(f"[{self.done}/{self.total}] {job.name}: {what} | {self.status()}")

    def heartbeat(self) -> None:
        now = time.perf_counter()
        names = ", ".join(f"{job.name} ({format_duration(now - t)})" for job, t in self.running.values())
        self._emit(f"... {self.status()}" + (f"; running: {names}" if names else ""))


def _child(conn: Any, job: Job) -> None:
    """Subprocess entry point: run one job and send its row back."""
    try:
        row = run_job(job)
    except BaseException as exc:  # KeyboardInterrupt in the child: report, do not hang the parent
        row = failed_row(job, f"{type(exc).__name__}: {exc}")
    conn.send(row)
    conn.close()


def run_sequential(jobs: Sequence[Job], on_row: OnRow, progress: Progress, *, status_every: float = 60.0) -> None:
    """Run the jobs one after another, each in a fresh ``spawn`` subprocess."""
    ctx = mp.get_context("spawn")
    for job in jobs:
        recv, send = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_child, args=(send, job), name=f"natrl-bench-{job.index}")
        progress.started(job)
        proc.start()
        send.close()
        try:
            while not recv.poll(status_every):
                progress.heartbeat()
            try:
                row = recv.recv()
            except EOFError:
                proc.join()
                row = failed_row(job, f"the worker process died without a result (exit code {proc.exitcode})")
            proc.join()
        except BaseException:
            if proc.is_alive():
                proc.terminate()
                proc.join(5)
            raise
        finally:
            recv.close()
        on_row(job, row)
        progress.finished(job, row)


def run_ray(
    jobs: Sequence[Job],
    on_row: OnRow,
    progress: Progress,
    *,
    address: str | None = None,
    num_cpus: int | None = None,
    status_every: float = 60.0,
) -> dict[str, Any]:
    """Run the jobs as Ray tasks, one CPU each; returns facts about the Ray cluster.

    Args:
        jobs: the sweep.
        on_row: called with each finished row.
        progress: the display.
        address: an existing cluster ("auto", "ray://host:10001", "host:6379"); None starts a
            local Ray in this process (and shuts it down at the end).
        num_cpus: CPUs of the local Ray (default: all); ignored with ``address``.
        status_every: seconds between status lines.

    Raises:
        BenchError: Ray is not installed, the cluster does not answer, or the local Ray could not be bound to
            the loopback address.
    """
    if importlib.util.find_spec("ray") is None:
        raise BenchError("--ray needs Ray, which is not installed: pip install 'natrl[ray]'")
    import ray

    from natrl.cluster import connect

    try:
        started_here = connect(address, num_cpus)
    except (ConnectionError, ValueError) as exc:  # ValueError: a malformed address
        raise BenchError(f"cannot connect to the Ray cluster at {address!r}: {exc}") from None
    except RuntimeError as exc:
        raise BenchError(f"cannot start a local Ray: {exc}") from None
    pending: list[Any] = []
    try:
        cpus = int(ray.cluster_resources().get("CPU", 1))
        info = {"ray_version": ray.__version__, "cluster_cpus": cpus, "address": address or "local"}
        task = ray.remote(num_cpus=1, max_calls=1, max_retries=0)(run_job)
        by_ref = {task.remote(job): job for job in jobs}
        pending = list(by_ref)
        # Ray starts the tasks in submission order, at most `cpus` at a time: the display's
        # "running" is that estimate (Ray does not report when a task starts)
        for job in jobs[:cpus]:
            progress.started(job)
        next_start = min(cpus, len(jobs))
        while pending:
            done, pending = ray.wait(pending, num_returns=1, timeout=status_every)
            if not done:
                progress.heartbeat()
                continue
            for ref in done:
                job = by_ref[ref]
                try:
                    row = ray.get(ref)
                except Exception as exc:  # the task's worker died (run_job itself never raises)
                    row = failed_row(job, f"Ray task failed: {type(exc).__name__}: {exc}")
                on_row(job, row)
                progress.finished(job, row)
                if next_start < len(jobs):
                    progress.started(jobs[next_start])
                    next_start += 1
        return info
    except BaseException:
        for ref in pending:
            ray.cancel(ref, force=True)
        raise
    finally:
        if started_here:
            ray.shutdown()
