"""``natrl plot``: learning curves of run directories into one image."""

from __future__ import annotations

import argparse


def cmd_plot(args: argparse.Namespace) -> int:
    """``natrl plot``: learning curves of run directories into one image."""
    from natrl.plotting import plot_runs

    out = plot_runs(args.runs, args.output, metric=args.metric, band=args.band, title=args.title)
    print(f"wrote {out}")
    return 0
