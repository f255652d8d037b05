"""Ray, started once per process the way natrl uses it (rollout workers, benchmark sweeps).

An ``address`` connects to an existing cluster ("auto", "ray://host:10001", "host:6379"): a cluster the user
chose, whose network exposure is the user's. An address where nothing accepts a TCP connection, or where
what does accept one does not complete a gRPC (HTTP/2) handshake, within :data:`CONNECT_TIMEOUT_S` seconds
each, is refused with one line, instead of Ray's connection retries, which do not end.

Without an address a new local instance is started — ``address="local"``, so it is a new instance even when
another Ray runs on this machine (a bare ``ray.init()`` would attach to that one and refuse ``num_cpus``) —
that serves this process only, so every process of it listens on the loopback address alone (GCS, raylet,
object manager, workers, runtime-env agent; the dashboard is off and the dashboard agent runs without its
HTTP and metrics servers). Ray replaces a loopback ``_node_ip_address`` by the machine's routable address
(``ray._private.services.resolve_ip_for_localhost``) unless clusters are disabled
(``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` when Ray was imported); :func:`connect` disables them for the
duration of ``ray.init`` and checks afterwards that the node's address is a loopback one.

The local instance ends with this process:

* at a normal exit, Ray's ``atexit`` hook shuts it down; on SIGTERM, Ray's handler does, unless the
  process had installed its own SIGTERM handler (natrl's command line stops after the current update),
  which is kept, and the exit that follows shuts Ray down;
* if this process is killed (SIGKILL, the OOM killer), Ray's own fate sharing (Linux ``PR_SET_PDEATHSIG``)
  kills the GCS and the raylet at once, and the workers exit when they lose the raylet, but the raylet's
  agents (runtime env agent, dashboard agent) wait 60 s for a dead GCS to take their last report. A small
  guard process, started with the instance, waits for the end of a pipe from this process and then kills
  whatever is left of the processes the instance started (Linux).
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

__all__ = ["CONNECT_TIMEOUT_S", "connect", "is_loopback"]

CONNECT_TIMEOUT_S = 10.0
"""Seconds an existing cluster's address has to accept a TCP connection before :func:`connect` gives up."""

_LOCALHOST_NAMES = ("localhost", "127.0.0.1", "::1")


def connect(address: str | None, num_cpus: int | None = None) -> bool:
    """Initialise Ray in this process unless it already is; True when this call started it.

    Args:
        address: an existing cluster ("auto", "ray://host:10001", "host:6379"), or None for a new local
            instance bound to the loopback address (module docstring).
        num_cpus: CPUs of the local instance (default: all); ignored with ``address``.

    Raises:
        ImportError: Ray is not installed.
        ConnectionError: nothing answers at ``address`` within :data:`CONNECT_TIMEOUT_S` seconds, or Ray
            cannot connect to it.
        RuntimeError: the local instance could not be bound to the loopback address (it is shut down again).
    """
    import ray

    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    if address:
        _check_answers(address, ray)
        ray.init(address=address, **kwargs)
        return True
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous_sigterm = signal.getsignal(signal.SIGTERM) if in_main_thread else None
    before = set(_descendants(os.getpid()))
    with _loopback_node_address(ray):
        ray.init(address="local", num_cpus=num_cpus, _node_ip_address="127.0.0.1", **kwargs)
    node_ip = ray.util.get_node_ip_address()
    if not is_loopback(node_ip):
        ray.shutdown()
        raise RuntimeError(
            f"the local Ray instance took the node address {node_ip}, not a loopback one, so its services would "
            f"listen beyond this machine; it was shut down (Ray {ray.__version__})"
        )
    if in_main_thread and callable(previous_sigterm):
        signal.signal(signal.SIGTERM, previous_sigterm)  # the caller's handler; the exit it leads to shuts Ray down
    _start_guard([pid for pid in _descendants(os.getpid()) if pid not in before])
    return True


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (``127.0.0.0/8``, ``::1``, or IPv4-mapped loopback)."""
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return host == "localhost"
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


@contextlib.contextmanager
def _loopback_node_address(ray: Any) -> Iterator[None]:
    """Ray keeps a loopback ``_node_ip_address`` only while clusters are disabled (module docstring)."""
    constants = getattr(getattr(ray, "_private", None), "ray_constants", None)
    if constants is None or not hasattr(constants, "ENABLE_RAY_CLUSTER"):
        yield  # another Ray: connect() checks the node address afterwards
        return
    before = constants.ENABLE_RAY_CLUSTER
    constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        constants.ENABLE_RAY_CLUSTER = before


def _check_answers(address: str, ray: Any) -> None:
    """Raise ConnectionError unless something accepts a TCP connection at ``address`` and completes a gRPC
    handshake, as Ray's GCS and Ray Client servers do (not checked with ``RAY_USE_TLS``, whose handshake
    needs the certificates). "auto" is Ray's to resolve: it looks for a GCS process running on this machine
    and fails at once when there is none."""
    rest = address.removeprefix("ray://")
    host, sep, port_text = rest.rpartition(":")
    if not sep or not port_text.isdigit():
        return  # "auto", or a form Ray itself validates
    host = host.strip("[]")
    hosts = [host]
    if host in _LOCALHOST_NAMES:
        hosts.append(ray.util.get_node_ip_address())  # Ray connects to the node's address instead of a loopback one
    errors = []
    for h in dict.fromkeys(hosts):
        try:
            with socket.create_connection((h, int(port_text)), timeout=CONNECT_TIMEOUT_S):
                break
        except OSError as exc:
            errors.append(f"{h}: {exc.strerror or type(exc).__name__}")
    else:
        raise ConnectionError(f"nothing answers at {address} within {CONNECT_TIMEOUT_S:g} s ({'; '.join(errors)})")
    if os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true"):
        return
    import grpc  # a dependency of Ray's

    target = f"[{h}]:{port_text}" if ":" in h else f"{h}:{port_text}"
    channel = grpc.insecure_channel(target)
    try:
        grpc.channel_ready_future(channel).result(timeout=CONNECT_TIMEOUT_S)
    except grpc.FutureTimeoutError:
        raise ConnectionError(
            f"{address} accepts connections but gives no gRPC handshake within {CONNECT_TIMEOUT_S:g} s: "
            "not a Ray cluster's address"
        ) from None
    finally:
        channel.close()


_GUARD = """
import os, signal, sys
def started(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None
procs = {}
for line in sys.stdin:
    pid, start = line.split()
    procs[int(pid)] = start
for pid, start in procs.items():
    if started(pid) == start:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
"""


def _proc_start(pid: int) -> str | None:
    """The start time of process ``pid`` in clock ticks since boot (field 22 of /proc/<pid>/stat)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _descendants(pid: int) -> list[int]:
    """The processes below ``pid`` (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _start_guard(pids: list[int]) -> None:
    """Have the guard kill what is left of ``pids`` (the local instance's processes) once this process has
    ended (module docstring); Linux only. One guard serves the process (started with its first local
    instance); it reads ``pid start-time`` lines until this process's end of the pipe closes, and kills only
    processes whose start time still matches (a reused pid is left alone)."""
    global _guard
    if not sys.platform.startswith("linux") or not os.path.isdir("/proc") or not pids:
        return
    lines = "".join(f"{pid} {start}\n" for pid in pids if (start := _proc_start(pid)) is not None)
    if _guard is None or _guard.poll() is not None:
        _guard = subprocess.Popen(
            [sys.executable, "-c", _GUARD],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C to the terminal's process group leaves it to do its job
            text=True,
        )
        if not _fork_hook:
            os.register_at_fork(after_in_child=_leave_guard_in_child)  # a forked child must not hold the pipe
            _fork_hook.append(True)
    assert _guard.stdin is not None
    with contextlib.suppress(OSError):
        _guard.stdin.write(lines)
        _guard.stdin.flush()


_guard: subprocess.Popen[str] | None = None
_fork_hook: list[bool] = []
_left_in_children: list[subprocess.Popen[str]] = []


def _leave_guard_in_child() -> None:
    """In a forked child: point the guard's pipe descriptor at /dev/null, so that the pipe closes with this
    process alone, and forget the guard (a local instance the child starts gets a guard of its own)."""
    global _guard
    if _guard is None or _guard.stdin is None:
        return
    with contextlib.suppress(OSError):
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, _guard.stdin.fileno(), inheritable=False)
        os.close(null)
    _left_in_children.append(_guard)  # kept referenced: its file object now holds /dev/null
    _guard = None
