"""Ray, started once per process the way natrl uses it (rollout workers, benchmark sweeps).

An ``address`` connects to an existing cluster ("auto", "ray://host:10001", "host:6379"); without one a
new local instance is started — ``address="local"``, so it is a new instance even when another Ray runs
on this machine (a bare ``ray.init()`` would attach to that one and refuse ``num_cpus``), bound to the
loopback address, since it serves this process only.
"""

from __future__ import annotations

import logging
from typing import Any

__all__ = ["connect"]


def connect(address: str | None, num_cpus: int | None = None) -> bool:
    """Initialise Ray in this process unless it already is; True when this call started it.

    Raises:
        ImportError: Ray is not installed.
        ConnectionError: the cluster at ``address`` cannot be reached.
    """
    import ray

    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    if address:
        ray.init(address=address, **kwargs)
    else:
        ray.init(address="local", num_cpus=num_cpus, _node_ip_address="127.0.0.1", **kwargs)
    return True
