"""Regenerate the summary tables quoted in markdown pages from the results files they name.

A page quotes a sweep's summary (``summary.md`` of ``natrl bench``) between
``<!-- summary: docs/bench/<name>-results.json -->`` and ``<!-- /summary -->``; this rewrites each such
block in place from its results file (:func:`natrl.bench.summary.rewrite_summaries`).

Usage::

    python scripts/readme_summary.py              # README.md
    python scripts/readme_summary.py docs/x.md    # other pages
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from natrl.bench.summary import SUMMARY_BLOCK, rewrite_summaries

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pages", nargs="*", type=Path, default=[ROOT / "README.md"], help="default: README.md")
    args = parser.parse_args(argv)
    for page in args.pages:
        text = page.read_text(encoding="utf-8")
        if not SUMMARY_BLOCK.search(text):
            print(f"readme_summary: {page} has no <!-- summary: ... --> block", file=sys.stderr)
            return 1
        try:
            new = rewrite_summaries(text, ROOT)
        except ValueError as exc:
            print(f"readme_summary: {page}: {exc}", file=sys.stderr)
            return 1
        page.write_text(new, encoding="utf-8")
        print(f"readme_summary: {page} {'rewritten' if new != text else 'unchanged'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
