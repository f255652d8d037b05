"""The command line's one-line errors, as tests read them."""

from __future__ import annotations

import pytest

from natrl.cli import main


def one_error_line(capsys: pytest.CaptureFixture[str], argv: list[str], prefix: str = "natrl: error: ") -> str:
    """Run the CLI; assert it failed with exit code 2 and exactly one line on stderr, starting ``prefix`` (argparse's
    own errors name the subcommand: ``natrl train: error: ``), with no traceback; return that line."""
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith(prefix), err
    assert "Traceback" not in err
    return lines[0]
