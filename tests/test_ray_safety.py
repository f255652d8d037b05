"""Ray as natrl starts it: every process of the local instance listens on the loopback address alone, nothing
is left of it 10 s after the learner is SIGKILLed, and nothing waits forever (workers with no free CPU, a Ray
address that does not answer)."""

from __future__ import annotations

import ipaddress
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from natrl import TRPO
from natrl.cluster import connect, is_loopback

ray = pytest.importorskip("ray")
linux_only = pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads /proc (Linux)")


# ----------------------------------------------------------------------------- sockets and processes from /proc
def _tree(root: int) -> set[int]:
    """``root`` and the processes below it."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = {root}, [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _alive(pids: set[int]) -> set[int]:
    """The pids that are running (a zombie is not)."""
    alive = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state not in ("Z", "X"):
            alive.add(pid)
    return alive


def _address(hex_address: str) -> str:
    """/proc/net/tcp's address field (hex, in host byte order word by word) as text."""
    raw = bytes.fromhex(hex_address)
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return str(ipaddress.ip_address(words))


def _listeners(pids: set[int]) -> list[tuple[str, int, int]]:
    """(address, port, pid) of every TCP socket in the LISTEN state held by one of ``pids``."""
    listening: dict[str, tuple[str, int]] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A":  # TCP_LISTEN
                host, port = fields[1].split(":")
                listening[fields[9]] = (_address(host), int(port, 16))
    found = []
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:[") and target[8:-1] in listening:
                found.append((*listening[target[8:-1]], pid))
    return sorted(set(found))


def test_loopback_addresses() -> None:
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.0.1.1", "::1", "::ffff:127.0.0.1", "localhost", "[::1]"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "192.0.2.2", "::ffff:10.0.0.1", "example.org"))


# ----------------------------------------------------------------------------- a learner with workers, then SIGKILL
_LEARNER = textwrap.dedent(
    """
    import sys, time
    from natrl import TRPO
    agent = TRPO("CartPole-v1", seed=0, workers=2, n_envs=1, n_steps=512)
    agent.learn(4 * 1024)
    print("TRAINED", agent.num_timesteps, flush=True)
    time.sleep(300)
    """
)


@linux_only
def test_a_learner_with_workers_listens_on_loopback_only_and_leaves_nothing_when_killed() -> None:
    """A learner with two Ray workers (a local Ray started by natrl): every listening socket of its process
    tree — GCS, raylet, object manager, the learner's and the workers' gRPC servers, the runtime env agent — is
    bound to a loopback address; 10 s after a SIGKILL of the learner no process of the tree and no listener
    is left."""
    learner = subprocess.Popen(
        [sys.executable, "-c", _LEARNER], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    try:
        assert learner.stdout is not None
        line = learner.stdout.readline()
        assert line.startswith("TRAINED 4096"), line
        tree = _tree(learner.pid)
        listeners = _listeners(tree)
        assert len(listeners) >= 5, listeners  # GCS, raylet (2), learner, two workers, runtime env agent
        assert [lst for lst in listeners if not is_loopback(lst[0])] == []
    finally:
        learner.kill()
        learner.wait()
    killed = time.monotonic()
    others = tree - {learner.pid}
    while _alive(others) and time.monotonic() - killed < 10:
        time.sleep(0.2)
    assert _alive(others) == set(), "processes left 10 s after the learner was killed"
    assert _listeners(others) == []


@linux_only
@pytest.mark.slow
def test_a_benchmark_on_ray_listens_on_loopback_only(tmp_path) -> None:
    """``natrl bench --ray``: every listener of its process tree, polled while it runs, is a loopback one."""
    cmd = ["-m", "natrl.cli", "bench", "--algos", "trpo", "--envs", "CartPole-v1", "--seeds", "0", "--steps", "3000"]
    bench = subprocess.Popen(
        [sys.executable, *cmd, "--ray", "--ray-cpus", "2", "--out", str(tmp_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    seen: set[tuple[str, int, int]] = set()
    while bench.poll() is None:
        seen.update(_listeners(_tree(bench.pid)))
        time.sleep(0.2)
    assert bench.returncode == 0
    assert len({port for _, port, _ in seen}) >= 5, seen
    assert [lst for lst in seen if not is_loopback(lst[0])] == []


# ----------------------------------------------------------------------------- nothing waits forever
def _sigterm_handler(signum, frame) -> None:  # pragma: no cover - never called
    pass


@pytest.fixture(scope="module")
def local_ray():
    """natrl's local Ray of 2 CPUs, started while a SIGTERM handler of the caller's is installed."""
    ray.shutdown()
    previous = signal.signal(signal.SIGTERM, _sigterm_handler)
    try:
        assert connect(None, num_cpus=2)
        yield
    finally:
        ray.shutdown()
        signal.signal(signal.SIGTERM, previous)


@pytest.mark.usefixtures("local_ray")
def test_the_callers_sigterm_handler_is_kept() -> None:
    """Ray installs its own SIGTERM handler; natrl puts the caller's back (the command line's stops after the
    current update and saves a checkpoint; the exit that follows shuts Ray down)."""
    assert signal.getsignal(signal.SIGTERM) is _sigterm_handler
    assert is_loopback(ray.util.get_node_ip_address())


@pytest.mark.usefixtures("local_ray")
def test_a_second_agent_gets_one_line_while_the_first_holds_the_cpus(monkeypatch) -> None:
    """Two agents with workers=2 on a Ray of 2 CPUs: while the first holds both CPUs, the second finds none free
    and raises one line naming the CPUs wanted and free after the timeout; once the first is closed, its
    workers are killed, the CPUs are free and the second trains."""
    import natrl.rl.distributed as distributed

    monkeypatch.setattr(distributed, "SCHEDULE_TIMEOUT_S", 2.0)

    def agent() -> TRPO:
        return TRPO("CartPole-v1", seed=0, workers=2, n_envs=1, n_steps=64)

    first = agent()
    first.learn(256)
    second = agent()
    t0 = time.monotonic()
    with pytest.raises(
        RuntimeError, match=r"workers=2 need 2 free CPUs .* still had 0 of its 2 CPUs free after 2 s"
    ) as err:
        second.learn(256)
    assert time.monotonic() - t0 < 15 and "\n" not in str(err.value)
    first.close()
    second.learn(256)
    assert second.num_timesteps == 256
    second.close()
    deadline = time.monotonic() + 10  # ray.kill is asynchronous
    while ray.available_resources().get("CPU") != 2.0 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert ray.available_resources().get("CPU") == 2.0


def test_an_address_that_does_not_answer_gives_one_line_quickly() -> None:
    """``ray_address`` naming a port nothing listens on: one line within seconds, not Ray's endless retries."""
    ray.shutdown()
    t0 = time.monotonic()
    with pytest.raises(ConnectionError, match=r"nothing answers at 127\.0\.0\.1:1 within"):
        connect("127.0.0.1:1")
    agent = TRPO("CartPole-v1", workers=2, ray_address="127.0.0.1:1")
    with pytest.raises(
        ValueError, match=r"cannot connect to the Ray cluster at '127\.0\.0\.1:1': nothing answers"
    ) as err:
        agent.learn(128)
    assert "\n" not in str(err.value)
    assert time.monotonic() - t0 < 30
    assert not ray.is_initialized()


def test_an_address_that_accepts_but_never_speaks_gives_one_line(monkeypatch) -> None:
    """A port that accepts TCP connections but never completes a gRPC handshake (Ray would wait on it for
    ever): one line after the probe's timeout."""
    import socket

    import natrl.cluster

    monkeypatch.setattr(natrl.cluster, "CONNECT_TIMEOUT_S", 1.0)
    ray.shutdown()
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()  # the kernel completes TCP handshakes; nothing ever answers
        address = f"127.0.0.1:{silent.getsockname()[1]}"
        t0 = time.monotonic()
        with pytest.raises(ConnectionError, match="accepts connections but gives no gRPC handshake within 1 s"):
            connect(address)
    assert time.monotonic() - t0 < 10
    assert not ray.is_initialized()
