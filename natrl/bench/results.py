"""The files of a sweep: ``results.json`` and ``results.csv`` written atomically, read back and checked,
and ``index.md``, the list of the sweeps recorded in a folder.

* ``results.json``: ``{"metadata": {...}, "runs": [row, ...]}``, one row per job
  (see :func:`natrl.bench.worker.run_job`), including each run's evaluation
  curve, its natrl hyperparameters and, for a peer's runs, the translated arguments.
* ``results.csv``: the scalar columns of the rows (:data:`CSV_FIELDS`).

The tables and curves made from the rows are :mod:`natrl.bench.report`'s.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["CSV_FIELDS", "Row", "read_results", "sweep_index", "write_index", "write_results"]

Row = dict[str, Any]

CSV_FIELDS = (
    "index",
    "library",
    "algo",
    "env",
    "seed",
    "status",
    "error",
    "implementation",
    "steps",
    "budget",
    "train_seconds",
    "train_cpu_seconds",
    "eval_seconds",
    "setup_seconds",
    "wall_seconds",
    "steps_per_second",
    "final_eval_mean",
    "final_eval_std",
    "threshold",
    "threshold_steps",
    "threshold_seconds",
    "host",
    "preset",
    "sweep",
    "commit",
    "dirty",
    "date",
)


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _json_safe(value: Any) -> Any:
    """NaN/inf → None, tuples → lists, NumPy scalars → Python (strict JSON)."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_results(out_dir: Path, rows: Sequence[Row], metadata: dict[str, Any]) -> None:
    """Write results.json and results.csv (rows sorted by job index), each atomically."""
    rows = sorted(rows, key=lambda r: r.get("index", 0))
    payload = {"metadata": metadata, "runs": list(rows)}
    _write_atomic(out_dir / "results.json", json.dumps(_json_safe(payload), indent=1, allow_nan=False) + "\n")
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in CSV_FIELDS})
    _write_atomic(out_dir / "results.csv", buf.getvalue())


_NUMBER_FIELDS = tuple(CSV_FIELDS[CSV_FIELDS.index("steps") : CSV_FIELDS.index("threshold_seconds") + 1])


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _schema_problem(data: Any) -> str | None:
    """What keeps ``data`` from being the ``{"metadata": {...}, "runs": [row, ...]}`` of :func:`write_results`
    (None when nothing does): the first problem found, naming where it is."""
    if not isinstance(data, dict):
        return f"it holds a JSON {type(data).__name__}, not an object with metadata and runs"
    for key, kind in (("metadata", dict), ("runs", list)):
        if not isinstance(data.get(key), kind):
            what = "missing" if key not in data else f"a {type(data[key]).__name__}"
            return f"its {key!r} entry is {what}, not {'an object' if kind is dict else 'a list'}"
    meta = data["metadata"]
    for key, kind in (("versions", dict), ("commands", list), ("replaced", list), ("sweeps", dict)):
        if key in meta and not isinstance(meta[key], kind):
            return f"metadata.{key} is a {type(meta[key]).__name__}, not {'an object' if kind is dict else 'a list'}"
    for i, row in enumerate(data["runs"]):
        where = f"runs[{i}]"
        if not isinstance(row, dict):
            return f"{where} is a {type(row).__name__}, not an object"
        for key in ("library", "algo", "env", "status"):
            if not isinstance(row.get(key), str):
                return f"{where}.{key} is {'missing' if key not in row else repr(row[key])}, not a string"
        if not _is_int(row.get("seed")):
            return f"{where}.seed is {'missing' if 'seed' not in row else repr(row['seed'])}, not an integer"
        if "index" in row and not _is_int(row["index"]):
            return f"{where}.index is {row['index']!r}, not an integer"
        for key in ("sweep", "commit", "command", "date"):
            if row.get(key) is not None and not isinstance(row[key], str):
                return f"{where}.{key} is {row[key]!r}, not a string"
        if row.get("dirty") is not None and not isinstance(row["dirty"], bool):
            return f"{where}.dirty is {row['dirty']!r}, not true or false"
        for key in _NUMBER_FIELDS:
            if row.get(key) is not None and not _is_number(row[key]):
                return f"{where}.{key} is {row[key]!r}, not a number"
        peer = row.get("peer")
        if peer is not None and not (isinstance(peer, dict) and isinstance(peer.get("notes", []), list)):
            return f"{where}.peer is not an object with a list of notes"
        curve = row.get("curve")
        if curve is None:
            continue
        if not isinstance(curve, list):
            return f"{where}.curve is a {type(curve).__name__}, not a list"
        for j, point in enumerate(curve):
            keys = ("steps", "train_seconds", "mean")  # null: a NaN written as JSON
            if not (
                isinstance(point, dict) and all(k in point and (point[k] is None or _is_number(point[k])) for k in keys)
            ):
                return f"{where}.curve[{j}] is not an object with numbers steps, train_seconds and mean"
    return None


def read_results(path: str | os.PathLike[str]) -> tuple[dict[str, Any], list[Row]]:
    """(metadata, rows) of a results.json (or of the folder holding it).

    Raises:
        OSError: the file cannot be read.
        ValueError: it is not JSON, or not the schema :func:`write_results` writes (the message says where).
    """
    path = Path(path)
    if path.is_dir():
        path = path / "results.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    problem = _schema_problem(data)
    if problem is not None:
        raise ValueError(f"not a natrl bench results.json: {problem}")
    return data["metadata"], data["runs"]


# --------------------------------------------------------------------------- index of a folder of sweeps
def _cell(text: Any) -> str:
    """Text for a markdown table cell: one line, pipes escaped."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _sweep_summary(path: Path, data: Any) -> dict[str, Any] | None:
    """What the index says of one JSON file (None: not a file with a ``metadata`` object)."""
    if not isinstance(data, dict) or not isinstance(data.get("metadata"), dict):
        return None
    meta = data["metadata"]
    runs = data.get("runs") if isinstance(data.get("runs"), list) else data.get("rows")
    runs = [r for r in runs if isinstance(r, dict)] if isinstance(runs, list) else []
    sweeps = meta.get("sweeps") if isinstance(meta.get("sweeps"), dict) else {}
    commits = [meta.get("commit") or meta.get("worktree_commit")]
    commits += [s.get("commit") for s in sweeps.values() if isinstance(s, dict)]
    commits += [r.get("commit") for r in runs]
    commits = [str(c) for c in dict.fromkeys(commits) if c]
    dirty = meta.get("dirty") is True or any(isinstance(s, dict) and s.get("dirty") is True for s in sweeps.values())
    commands = meta.get("commands") if isinstance(meta.get("commands"), list) else [meta.get("command")]
    commands += [r.get("command") for r in runs]
    commands = [str(c) for c in dict.fromkeys(commands) if c]
    table = path.with_name(path.name.removesuffix("-results.json").removesuffix(".json") + "-table.md")
    return {
        "name": path.name.removesuffix(".json").removesuffix("-results"),
        "file": path.name,
        "table": table.name if table.is_file() else None,
        "date": str(meta.get("date") or ""),
        "commits": commits,
        "dirty": dirty,
        "commands": commands,
        # natrl bench rows are runs; other experiments' rows may hold their runs
        "runs": sum(len(r["runs"]) if isinstance(r.get("runs"), list) else 1 for r in runs),
        "envs": list(dict.fromkeys(str(r["env"]) for r in runs if r.get("env"))),
        "libraries": list(dict.fromkeys(str(r["library"]) for r in runs if r.get("library"))),
        "merged": isinstance(meta.get("merged_from"), list),
    }


def sweep_index(directory: str | os.PathLike[str]) -> str:
    """A markdown index of the sweeps whose JSON results lie in ``directory``: per file, newest first, the
    date, the natrl commit(s) when recorded, the runs, envs and libraries, and the command line(s).

    Every ``*.json`` with a ``metadata`` object counts (``natrl bench`` results and other recorded
    experiments); other JSON files are listed at the end. The text depends on the files only, so
    regenerating it after no change gives the same file.

    Raises:
        OSError: the folder cannot be read.
    """
    folder = Path(directory)
    entries, others = [], []
    for path in sorted(folder.glob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            data = None
        summary = _sweep_summary(path, data)
        if summary is None:
            others.append(path.name)
        else:
            entries.append(summary)
    entries.sort(key=lambda e: (e["date"], e["name"]), reverse=True)
    lines = [
        "# Sweeps in this folder",
        "",
        f"Generated by `natrl bench --index {folder.as_posix()}` from the JSON files here (newest first); "
        "regenerate it after adding a sweep. Commit: the natrl commit the runs recorded (`+` when the work "
        "tree had uncommitted changes); sweeps older than that record show none.",
        "",
        "| sweep | date | commit | runs | envs | libraries | command |",
        "|---|---|---|---|---|---|---|",
    ]
    for e in entries:
        name = f"[{e['name']}]({e['table']})" if e["table"] else e["name"]
        name += f" ([json]({e['file']}))" + (" (merged)" if e["merged"] else "")
        commits = ", ".join(f"`{c[:12]}`" for c in e["commits"]) + ("+" if e["dirty"] and e["commits"] else "")
        commands = "; ".join(f"`{_cell(c)}`" for c in e["commands"])
        lines.append(
            f"| {name} | {e['date'][:19].replace('T', ' ') or '–'} | {commits or '–'} | {e['runs']} | "
            f"{_cell(', '.join(e['envs'])) or '–'} | {_cell(', '.join(e['libraries'])) or '–'} | {commands or '–'} |"
        )
    if others:
        lines += ["", "Other JSON files (no sweep metadata): " + ", ".join(f"[{o}]({o})" for o in others) + "."]
    return "\n".join(lines) + "\n"


def write_index(directory: str | os.PathLike[str]) -> Path:
    """Write :func:`sweep_index` of ``directory`` to ``directory/index.md`` (atomically) and return its path."""
    path = Path(directory) / "index.md"
    _write_atomic(path, sweep_index(directory))
    return path
