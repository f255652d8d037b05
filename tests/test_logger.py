"""The logger (natrl/logger.py): record/record_mean/dump, progress.csv's fixed header and its repair on resume,
reading natrl's, natrl's earlier and stable-baselines3's progress.csv files."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from natrl.logger import (
    KNOWN_COLUMNS,
    CSVOutput,
    Logger,
    ProgressFileError,
    RunFileWarning,
    configure,
    read_progress,
    truncate_progress,
)

T = "time/total_timesteps"
KL = "train/kl"


def _write(path: Path, rows: list[dict[str, Any]], resume_step: int | None = None) -> list[str]:
    out = CSVOutput(path, resume_step)
    for row in rows:
        out.write(row, int(row[T]))
    out.close()
    return path.read_text().splitlines()


def _dict_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


class _Memory:
    name = "memory"

    def __init__(self) -> None:
        self.rows: list[tuple[int, dict[str, Any]]] = []

    def write(self, values: dict[str, Any], step: int) -> None:
        self.rows.append((step, dict(values)))

    def close(self) -> None:
        pass


# ----------------------------------------------------------------------------- Logger
def test_record_mean_averages_the_values_since_the_last_dump() -> None:
    out = _Memory()
    logger = Logger(None, [out])
    values = [1.0, 2.5, -4.0, 8.0]
    for v in values:
        logger.record_mean("train/x", v)
    logger.record("train/y", 3.0)
    logger.record("train/y", 5.0)  # record keeps the last value
    logger.dump(7)
    logger.record_mean("train/x", 10.0)
    logger.dump(8)
    assert out.rows[0][0] == 7 and out.rows[0][1]["train/x"] == pytest.approx(sum(values) / len(values))
    assert out.rows[0][1]["train/y"] == 5.0
    assert out.rows[1] == (8, {"train/x": 10.0})  # a new row starts afresh


def test_exclude_leaves_a_key_out_of_the_named_output() -> None:
    out = _Memory()
    logger = Logger(None, [out])
    logger.record("a", 1.0, exclude="memory")
    logger.record("b", 2.0, exclude=("stdout",))
    logger.dump(1)
    logger.dump(2)  # nothing recorded: nothing written
    assert out.rows == [(1, {"b": 2.0})]


# ----------------------------------------------------------------------------- progress.csv
def test_csv_header_is_the_known_columns_then_the_others_sorted_and_widens_when_a_key_appears(tmp_path: Path) -> None:
    path = tmp_path / "progress.csv"
    lines = _write(path, [{T: 10, KL: 0.5, "train/zeta": 1.5}, {T: 20, "eval/mean_reward": 7.0, "train/alpha": 3.0}])
    assert lines[0].split(",") == [*KNOWN_COLUMNS, "train/alpha", "train/zeta"]
    rows = _dict_rows(path)
    expected = [
        {**dict.fromkeys(lines[0].split(","), ""), T: "10", KL: "0.5", "train/zeta": "1.5"},
        {**dict.fromkeys(lines[0].split(","), ""), T: "20", "eval/mean_reward": "7", "train/alpha": "3"},
    ]
    assert rows == expected
    cols = read_progress(path)
    np.testing.assert_array_equal(cols["eval/mean_reward"], [np.nan, 7.0])


def test_a_resumed_csv_is_cut_back_and_appended_to(tmp_path: Path) -> None:
    path = tmp_path / "progress.csv"
    lines = _write(path, [{T: t, KL: t / 1000} for t in (100, 200, 300, 400)])
    with path.open("a") as f:
        f.write("500,1,2,3")  # a row cut off by SIGKILL
    with pytest.warns(RunFileWarning, match="its last line was cut off"):
        out = CSVOutput(path, resume_step=300)
    assert out.rows_kept == 3
    out.write({T: 400, KL: 0.9}, 400)
    out.close()
    assert path.read_text().splitlines() == [*lines[:4], lines[4].replace("0.4", "0.9")]


def test_configure_writes_csv_and_resumes_it(tmp_path: Path) -> None:
    logger = configure(tmp_path, ["csv"])
    for t in (1, 2, 3):
        logger.record(T, t)
        logger.dump(t)
    logger.close()
    logger = configure(tmp_path, ["csv"], resume_step=2)
    logger.record(T, 5)
    logger.dump(5)
    logger.close()
    assert list(read_progress(tmp_path / "progress.csv")[T]) == [1, 2, 5]
    configure(tmp_path, ["csv"]).close()  # a new logger starts a new file, as stable-baselines3's does
    assert (tmp_path / "progress.csv").read_text() == ""


def test_a_csv_write_error_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "progress.csv"
    out = CSVOutput(path)
    path.unlink()
    path.mkdir()  # not writable as a file
    with pytest.raises(OSError) as info:
        out.write({T: 1}, 1)
    assert str(path) in str(info.value)


def test_read_progress_reads_natrls_earlier_files_and_sb3s(tmp_path: Path) -> None:
    old = tmp_path / "old.csv"
    old.write_text("timesteps,updates,ep_return_mean,eval_return_mean,kl,value_loss\n100,1,9.5,,0.01,2.0\n")
    cols = read_progress(old)
    assert {k: list(v) for k, v in cols.items() if k != "eval/mean_reward"} == {
        T: [100.0],
        "train/n_updates": [1.0],
        "rollout/ep_rew_mean": [9.5],
        KL: [0.01],
        "train/value_loss": [2.0],
    }
    sb3 = tmp_path / "sb3.csv"
    sb3.write_text("rollout/ep_len_mean,rollout/ep_rew_mean,time/fps,time/total_timesteps\n20,20,900,2048\n")
    assert read_progress(sb3)["rollout/ep_rew_mean"][0] == 20.0 and read_progress(sb3)[T][0] == 2048
    other = tmp_path / "other.csv"
    other.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="no header with a time/total_timesteps column"):
        read_progress(other)


def test_an_old_file_gets_sb3_names_on_resume(tmp_path: Path) -> None:
    path = tmp_path / "progress.csv"
    path.write_text("timesteps,kl\n100,0.5\n200,0.25\n")
    out = CSVOutput(path, resume_step=100)
    out.write({T: 200, KL: 0.125}, 200)
    out.close()
    rows = _dict_rows(path)
    assert [(r[T], r[KL]) for r in rows] == [("100", "0.5"), ("200", "0.125")]


def _progress_with_extras(path: Path, steps: tuple[int, ...] = (100, 200, 300, 400)) -> list[str]:
    return _write(path, [{T: t, KL: t / 1000, "train/value_loss": t / 10} for t in steps])


def test_truncate_progress_rewrites_a_damaged_header_when_the_rows_fit_it(tmp_path: Path) -> None:
    path = tmp_path / "progress.csv"
    lines = _write(path, [{T: t, KL: t / 1000} for t in (100, 200, 300)])  # the known columns only
    path.write_text("\n".join(["\x00\x00garbage", *lines[1:]]) + "\n")
    with pytest.warns(RunFileWarning, match=r"line 1 was not a progress\.csv header and is rewritten") as record:
        assert truncate_progress(path, 300) == 3
    assert "kept as progress.csv.damaged" in str(record[0].message)
    assert path.read_text().splitlines() == lines
    assert (tmp_path / "progress.csv.damaged").read_text().startswith("\x00\x00garbage\n")
    _write(path, [{T: 400, KL: 0.4}], resume_step=300)
    cols = read_progress(path)
    assert list(cols[T]) == [100, 200, 300, 400] and cols[KL][-1] == 0.4


def test_truncate_progress_keeps_the_extra_column_names_a_damaged_header_still_has(tmp_path: Path) -> None:
    path = tmp_path / "progress.csv"
    lines = _progress_with_extras(path)
    damaged = ["tim?steps", *lines[0].split(",")[1:]]
    path.write_text("\n".join([",".join(damaged), *lines[1:]]) + "\n")
    with pytest.warns(RunFileWarning, match="rewritten from natrl's columns"):
        assert truncate_progress(path, 400) == 4
    assert path.read_text().splitlines() == lines


def test_truncate_progress_refuses_a_header_whose_columns_cannot_be_named(tmp_path: Path) -> None:
    path = tmp_path / "progress.csv"
    lines = _progress_with_extras(path)
    damaged = "garbage\n" + "\n".join(lines[1:]) + "\n"
    path.write_text(damaged)
    with pytest.raises(ProgressFileError) as info:
        truncate_progress(path, 400)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    assert "names of its 12 columns are lost" in message and f"mv {path} {path}.damaged" in message
    assert path.read_text() == damaged  # untouched
    assert not (tmp_path / "progress.csv.damaged").exists()


def test_truncate_progress_keeps_the_rows_around_a_damaged_one(tmp_path: Path) -> None:
    path = tmp_path / "progress.csv"
    lines = _progress_with_extras(path, (100, 200, 300, 400, 500))
    cut = lines[2][: len(lines[2]) // 2]  # row 200 cut in the middle of the file
    path.write_text("\n".join([lines[0], lines[1], cut, "not,a,row", *lines[3:]]) + "\n")
    assert list(read_progress(path)[T]) == [100, 300, 400, 500]
    with pytest.warns(RunFileWarning) as record:
        assert truncate_progress(path, 400) == 3
    (warning,) = record
    assert "2 damaged rows (lines 3, 4) are dropped" in str(warning.message)
    assert "the original is kept as progress.csv.damaged" in str(warning.message)
    assert path.read_text().splitlines() == [lines[0], lines[1], lines[3], lines[4]]
    assert (tmp_path / "progress.csv.damaged").read_text().splitlines()[2] == cut
    # a second repair keeps the first original too
    path.write_text(path.read_text() + "oops\n")
    with pytest.warns(RunFileWarning, match=r"kept as progress\.csv\.damaged-2"):
        truncate_progress(path, 400)


def test_truncate_progress_refuses_a_file_with_no_readable_row(tmp_path: Path) -> None:
    path = tmp_path / "progress.csv"
    path.write_text(",".join(KNOWN_COLUMNS) + "\n" + "\n".join(["x,y", "1,2,3", "\x00\x01"]) + "\n")
    with pytest.raises(ProgressFileError, match="none of its 3 rows can be read"):
        truncate_progress(path, 400)
    # a file holding only a damaged header has nothing to lose: it starts afresh
    path.write_bytes(b"\xff\xfe garbage\n")
    with pytest.warns(RunFileWarning, match="started afresh"):
        lines = _write(path, [{T: 500}], resume_step=400)
    assert lines[0].split(",") == list(KNOWN_COLUMNS) and lines[1].startswith("500,")
