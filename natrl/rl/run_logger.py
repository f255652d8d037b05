"""The logger an agent makes for itself when none was given (stable-baselines3's ``configure_logger``).

With ``verbose=1`` the stats go to stdout; with ``tensorboard_log`` to a TensorBoard run under it, numbered
as stable-baselines3 numbers them (``PPO_1``, ``PPO_2``, …; a ``learn`` call with ``reset_num_timesteps=False``
continues the last run).
"""

from __future__ import annotations

from pathlib import Path

from natrl.logger import Logger, configure

__all__ = ["configure_logger"]


def configure_logger(
    current: Logger | None, *, verbose: int, tensorboard_log: str | None, run_name: str, new_run: bool
) -> Logger | None:
    """The logger of a ``learn`` call: ``current`` when it already writes to the same place, else a new one
    (``current`` is closed); None when the agent writes nowhere.

    Args:
        current: the logger the agent made for its previous ``learn`` call, or None.
        verbose: 1 writes to stdout.
        tensorboard_log: the folder of the TensorBoard runs, or None.
        run_name: the runs' name (``tb_log_name``).
        new_run: start a new numbered run (``reset_num_timesteps``) rather than continue the last one.
    """
    formats = (["stdout"] if verbose >= 1 else []) + (["tensorboard"] if tensorboard_log else [])
    if not formats:
        return None
    folder = None
    if tensorboard_log:
        root = Path(tensorboard_log)
        taken = [
            int(p.name.rsplit("_", 1)[1]) for p in root.glob(f"{run_name}_*") if p.name.rsplit("_", 1)[1].isdigit()
        ]
        last = max(taken, default=0)
        folder = root / f"{run_name}_{last + 1 if new_run or last == 0 else last}"
    if current is not None and current.dir == (None if folder is None else str(folder)):
        return current
    if current is not None:
        current.close()
    return configure(folder, formats)
