"""Learning curves of ``natrl train`` runs with matplotlib (``natrl plot``).

Each run directory contributes its ``progress.csv`` (the curve: x is ``time/total_timesteps``) and, when
there is one, its ``config.toml`` (algorithm, environment, seed, expected return). The files ``natrl train``
writes, those of ``natrl.logger.configure(dir, ["csv"])`` with ``learn``, natrl's earlier files (read under
SB3's names) and stable-baselines3's own ``progress.csv`` are all read. Runs that
share (algorithm, environment) are seeds of one experiment: they are drawn
as the mean over seeds with a band (min–max or ±1 std) on a common step grid.
Every environment gets its own panel.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from natrl.atomic import atomic_write_bytes
from natrl.logger import TIMESTEPS, read_progress, sb3_key
from natrl.runs import CONFIG_FILE, PROGRESS_FILE, RunSpec

__all__ = ["Curve", "aggregate", "expand_run_dirs", "load_curve", "plot_runs"]

EVAL_METRIC = "eval/mean_reward"
TRAIN_METRIC = "rollout/ep_rew_mean"
_LABELS = {
    EVAL_METRIC: "evaluation return (deterministic)",
    TRAIN_METRIC: "training episode return",
}


@dataclass(frozen=True)
class Curve:
    """One run's learning curve.

    Attributes:
        run_dir: the run directory.
        algo: algorithm name.
        env_id: environment id.
        seed: the run's seed.
        columns: every column of progress.csv as a float array (NaN where empty), under SB3's names.
        expected_return: the preset's expected return, if any.
    """

    run_dir: Path
    algo: str
    env_id: str
    seed: int
    columns: dict[str, np.ndarray]
    expected_return: float | None

    def series(self, metric: str) -> tuple[np.ndarray, np.ndarray]:
        """(timesteps, values) of the rows where ``metric`` (a column name; natrl's earlier names such as
        ``ep_return_mean`` are read as SB3's) has a finite value."""
        if metric not in self.columns:
            metric = sb3_key(metric)
        if metric not in self.columns:
            return np.empty(0), np.empty(0)
        x, y = self.columns[TIMESTEPS], self.columns[metric]
        ok = np.isfinite(x) & np.isfinite(y)
        return x[ok], y[ok]


def expand_run_dirs(paths: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """Run directories among ``paths``; a folder of runs (like ``runs/``) expands to its runs.

    Raises:
        FileNotFoundError: a path does not exist or holds no run.
    """
    found: list[Path] = []
    for p in map(Path, paths):
        if not p.exists():
            raise FileNotFoundError(f"{p} does not exist")
        if (p / PROGRESS_FILE).is_file():
            found.append(p)
            continue
        children = sorted(c for c in p.iterdir() if (c / PROGRESS_FILE).is_file()) if p.is_dir() else []
        if not children:
            raise FileNotFoundError(f"{p} is not a natrl run directory (no {PROGRESS_FILE}) and holds none")
        found.extend(children)
    return found


def load_curve(run_dir: str | os.PathLike[str]) -> Curve:
    """Read a run's progress.csv and config.toml (without one, as a Python script or stable-baselines3 writes:
    the algorithm is "?" and the folder's name stands for the env)."""
    run_dir = Path(run_dir)
    columns = read_progress(run_dir / PROGRESS_FILE)
    if (run_dir / CONFIG_FILE).is_file():
        spec = RunSpec.read(run_dir)
        return Curve(run_dir, spec.algo, spec.env_id, spec.seed, columns, spec.expected_return)
    return Curve(run_dir, "?", run_dir.name, 0, columns, None)


def aggregate(series: Sequence[tuple[np.ndarray, np.ndarray]], points: int = 200) -> tuple[np.ndarray, ...]:
    """Mean, min, max and std of several curves on a common step grid.

    The grid spans the steps every curve covers (from the largest first step
    to the smallest last step); each curve is linearly interpolated onto it.
    With a single curve the grid is its own steps.

    Returns:
        (grid, mean, low, high, std) arrays of equal length.
    """
    series = [(x, y) for x, y in series if len(x)]
    if not series:
        empty = np.empty(0)
        return empty, empty, empty, empty, empty
    if len(series) == 1:
        x, y = series[0]
        return x, y, y, y, np.zeros_like(y)
    lo = max(float(x[0]) for x, _ in series)
    hi = min(float(x[-1]) for x, _ in series)
    if hi <= lo:
        grid = np.array([hi])
    else:
        union = np.unique(np.concatenate([x[(x >= lo) & (x <= hi)] for x, _ in series]))
        grid = union if len(union) <= points else np.linspace(lo, hi, points)
    ys = np.stack([np.interp(grid, x, y) for x, y in series])
    return grid, ys.mean(0), ys.min(0), ys.max(0), ys.std(0)


def plot_runs(
    run_dirs: Sequence[str | os.PathLike[str]],
    output: str | os.PathLike[str],
    *,
    metric: str | None = None,
    band: str = "minmax",
    title: str | None = None,
    dpi: int = 150,
) -> Path:
    """Plot learning curves (return vs environment steps), one panel per environment.

    Args:
        run_dirs: run directories (or folders of runs).
        output: the image file (PNG, SVG or PDF by suffix).
        metric: the progress.csv column to plot; default ``eval/mean_reward`` when every run of a group has
            evaluations, else ``rollout/ep_rew_mean``.
        band: "minmax" (range over seeds), "std" (mean ± 1 std) or "none".
        title: figure title.
        dpi: resolution of raster output.

    Returns:
        the written file.

    Raises:
        FileNotFoundError: a path holds no run.
        ValueError: nothing to plot, or a bad ``band``.
    """
    if band not in ("minmax", "std", "none"):
        raise ValueError(f"band must be 'minmax', 'std' or 'none', got {band!r}")
    curves = [load_curve(d) for d in expand_run_dirs(run_dirs)]

    try:
        import matplotlib
    except ImportError:
        raise ValueError("natrl plot needs matplotlib (a dependency of natrl): pip install matplotlib") from None

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import EngFormatter

    envs = list(dict.fromkeys(c.env_id for c in curves))
    algos = list(dict.fromkeys(c.algo for c in curves))
    colors = {a: f"C{i % 10}" for i, a in enumerate(algos)}
    ncols = min(3, len(envs))
    nrows = math.ceil(len(envs) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.2 * ncols, 3.8 * nrows), squeeze=False)
    drawn = 0
    for ax, env_id in zip(list(axes.flat)[: len(envs)], envs, strict=True):
        metrics_used = set()
        for algo in algos:
            group = [c for c in curves if c.env_id == env_id and c.algo == algo]
            if not group:
                continue
            m = metric or (EVAL_METRIC if all(len(c.series(EVAL_METRIC)[0]) for c in group) else TRAIN_METRIC)
            grid, mean, low, high, std = aggregate([c.series(m) for c in group])
            if not len(grid):
                continue
            metrics_used.add(m)
            n = len(group)
            unit = "seed" if len({c.seed for c in group}) == n else "run"
            label = f"{algo} ({n} {unit}{'s' if n > 1 else ''})"
            ax.plot(
                grid,
                mean,
                color=colors[algo],
                lw=1.8,
                label=label,
                marker="o" if len(grid) == 1 else None,
            )
            if n > 1 and band != "none":
                lo_, hi_ = (low, high) if band == "minmax" else (mean - std, mean + std)
                ax.fill_between(grid, lo_, hi_, color=colors[algo], alpha=0.2, lw=0)
            drawn += 1
        expected = {c.expected_return for c in curves if c.env_id == env_id and c.expected_return is not None}
        if len(expected) == 1:
            ax.axhline(expected.pop(), color="0.4", ls="--", lw=1, label="preset's expected return")
        ax.set_title(env_id)
        ax.set_xlabel("environment steps")
        ylabel = _LABELS.get(next(iter(metrics_used)), next(iter(metrics_used))) if len(metrics_used) == 1 else "return"
        ax.set_ylabel(ylabel)
        ax.xaxis.set_major_formatter(EngFormatter(sep=""))
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[1]:  # an env with no values draws nothing to label
            ax.legend(fontsize="small", loc="best")
    for ax in list(axes.flat)[len(envs) :]:
        ax.set_visible(False)
    if drawn == 0:
        plt.close(fig)
        what = metric or f"{EVAL_METRIC} or {TRAIN_METRIC}"
        raise ValueError(f"nothing to plot: no run has values of {what} yet")
    if title:
        fig.suptitle(title)
    band_note = {
        "minmax": "band: min–max over seeds",
        "std": "band: ±1 std over seeds",
        "none": "",
    }[band]
    if band_note and any(sum(1 for c in curves if c.env_id == e and c.algo == a) > 1 for e in envs for a in algos):
        fig.text(
            0.995,
            0.005,
            f"line: mean over seeds; {band_note}",
            ha="right",
            va="bottom",
            fontsize=7,
            color="0.4",
        )
    fig.tight_layout()
    output = Path(output)
    fmt = output.suffix[1:].lower() or str(plt.rcParams["savefig.format"])
    if not output.suffix:  # as savefig does with a file name
        output = output.with_name(f"{output.name}.{fmt}")
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format=fmt, dpi=dpi)  # an unknown suffix fails here, before any file is touched
    finally:
        plt.close(fig)
    # atomic: a full or read-only disk leaves no half-written image and names the file
    return atomic_write_bytes(output, buf.getvalue())
