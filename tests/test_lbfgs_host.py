"""The host (NumPy) path of L-BFGS for small CPU problems against the generic tensor path.

``run_lbfgs`` runs problems of at most ``HOST_MAX_N`` entries on the CPU with NumPy views and the
compact representation of H (Byrd, Nocedal & Schnabel 1994); the generic path (any device) uses
the two-loop recursion on tensors. Both must give the same directions and the same iterates to
float tolerance; the generic path is forced here by making ``host_eligible`` answer False.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
import torch

from natrl.optim import LBFGS, minimize, quasi_newton
from natrl.optim.lbfgs_host import HOST_MAX_N, HostHistory, host_eligible
from natrl.optim.quasi_newton import lbfgs_init, lbfgs_push


def _rosen_fg(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    a, b = x[:-1], x[1:]
    r = b - a * a
    g = torch.zeros_like(x)
    g[:-1] = -400.0 * a * r - 2.0 * (1.0 - a)
    g[1:] += 200.0 * r
    return (100.0 * r * r + (1.0 - a) ** 2).sum(), g


def _logreg(dtype: torch.dtype) -> Callable[[torch.Tensor], torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(200, 12, generator=gen, dtype=torch.float64)
    w_true = torch.randn(12, generator=gen, dtype=torch.float64)
    y = (torch.rand(200, generator=gen, dtype=torch.float64) < torch.sigmoid(x @ w_true)).to(torch.float64)
    x, y = x.to(dtype), y.to(dtype)

    def f(w: torch.Tensor) -> torch.Tensor:
        z = x @ w
        return (torch.nn.functional.softplus(z) - y * z).mean() + 5e-3 * (w * w).sum()

    return f


def _counted(calls: dict[str, int], key: str, fn: Callable[..., object]) -> Callable[..., object]:
    def counting(*args: object, **kwargs: object) -> object:
        calls[key] += 1
        return fn(*args, **kwargs)

    return counting


def _run_on_path(
    method: str,
    host_step: tuple,
    tensor_step: tuple,
    fun,
    x0: torch.Tensor,
    host: bool,
    monkeypatch: pytest.MonkeyPatch,
    **kw,
):  # type: ignore[no-untyped-def]
    """minimize's iterates on the host path or (``host_eligible`` answering False) the tensor path; checks that
    the path asked for is the one that ran by counting the calls of each path's step, given as (owner, name)."""
    if not host:
        monkeypatch.setattr(quasi_newton, "host_eligible", lambda *a: False)
    calls = {"host": 0, "tensor": 0}
    for key, (owner, name) in (("host", host_step), ("tensor", tensor_step)):
        monkeypatch.setattr(owner, name, _counted(calls, key, getattr(owner, name)))
    xs: list[torch.Tensor] = []
    res = minimize(fun, x0, method=method, callback=lambda r: xs.append(r.x.clone()), **kw)
    monkeypatch.undo()
    assert (calls["host"] > 0, calls["tensor"] > 0) == (host, not host), calls
    return res, torch.stack(xs)


def _run(fun, x0: torch.Tensor, host: bool, monkeypatch: pytest.MonkeyPatch, **kw):  # type: ignore[no-untyped-def]
    """L-BFGS on one path (the directions: the host history's, or :func:`lbfgs_direction`)."""
    steps = (HostHistory, "direction"), (quasi_newton, "lbfgs_direction")
    return _run_on_path("lbfgs", *steps, fun, x0, host, monkeypatch, **kw)


def _host_and_tensor_runs_agree(run, fun, x0, iters, monkeypatch, **kw):  # type: ignore[no-untyped-def]
    """Both paths succeed with iterates equal to 1e-8 (relative) over the whole run (then with the same nit and
    nfev) or its first ``iters`` iterations, and end at the same x to 1e-4; returns both results."""
    r_host, x_host = run(fun, x0, True, monkeypatch, **kw)
    r_gen, x_gen = run(fun, x0, False, monkeypatch, **kw)
    assert r_host.success and r_gen.success
    k = len(x_gen) if iters is None else iters
    if iters is None:
        assert (r_host.nit, r_host.nfev) == (r_gen.nit, r_gen.nfev)
    scale = x_gen[:k].abs().amax(dim=1, keepdim=True)
    assert float(((x_host[:k] - x_gen[:k]).abs() / scale).max()) < 1e-8
    torch.testing.assert_close(r_host.x, r_gen.x, rtol=1e-4, atol=1e-4)
    return r_host, r_gen


@pytest.mark.parametrize("pairs", [1, 4, 10, 17])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_compact_direction_equals_two_loop(pairs: int, dtype: torch.dtype) -> None:
    """Pushing the same pairs (m = 6, so older ones are dropped) gives the direction of the two-loop loop."""
    gen = torch.Generator().manual_seed(pairs)
    n, m = 9, 6
    a = torch.randn(n, n, generator=gen, dtype=torch.float64)
    a = a @ a.T + 0.5 * torch.eye(n, dtype=torch.float64)
    mem = lbfgs_init()
    host = HostHistory(n, np.dtype(str(dtype).removeprefix("torch.")), m)
    for _ in range(pairs):
        s = torch.randn(n, generator=gen, dtype=torch.float64).to(dtype)
        y = (a @ s.double()).to(dtype)
        mem, skipped = lbfgs_push(mem, s, y, history_size=m)
        assert not skipped and not host.push(s.numpy(), y.numpy(), m)
    assert host.size == len(mem.s) == min(pairs, m)
    assert host.gamma == pytest.approx(mem.gamma, rel=1e-6)
    g = torch.randn(n, generator=gen, dtype=dtype)
    loop = _loop_direction(g, mem)
    tol = 1e-12 if dtype == torch.float64 else 2e-4
    torch.testing.assert_close(
        torch.from_numpy(host.direction(g.numpy())), loop, rtol=tol, atol=tol * float(loop.abs().max())
    )
    # the stored pairs come back as tensors, oldest first
    s_back, y_back = host.pairs()
    for u, v in zip((*s_back, *y_back), (*mem.s, *mem.y), strict=True):
        assert torch.equal(u, v)


def _loop_direction(g: torch.Tensor, mem: quasi_newton.LBFGSMemory) -> torch.Tensor:
    """N&W Algorithm 7.4 written out (the reference)."""
    q = g.double().clone()
    alphas = []
    for s, y, rho in zip(reversed(mem.s), reversed(mem.y), reversed(mem.rho), strict=True):
        a = rho * float(s.double() @ q)
        q -= a * y.double()
        alphas.append(a)
    r = mem.gamma * q
    for s, y, rho, a in zip(mem.s, mem.y, mem.rho, reversed(alphas), strict=True):
        b = rho * float(y.double() @ r)
        r += (a - b) * s.double()
    return (-r).to(g.dtype)


def test_skipped_pair_and_clear() -> None:
    host = HostHistory(3, np.dtype("float64"), 4)
    assert host.push(np.array([1.0, 0.0, 0.0]), np.array([-1.0, 0.0, 0.0]), 4)  # yᵀs < 0
    assert host.size == 0
    np.testing.assert_array_equal(host.direction(np.array([1.0, 2.0, 3.0])), [-1.0, -2.0, -3.0])
    assert not host.push(np.array([1.0, 0.0, 0.0]), np.array([2.0, 0.0, 0.0]), 4)
    host.clear()
    assert host.size == 0 and host.gamma == 1.0


@pytest.mark.parametrize(
    ("name", "n", "iters"),
    [("rosenbrock", 2, None), ("rosenbrock", 10, 40), ("rosenbrock", 100, 40), ("logreg", 12, None)],
)
def test_host_iterates_equal_generic_float64(
    name: str, n: int, iters: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same iterates to 1e-8 (relative) over the whole run, or its first ``iters`` iterations on
    Rosenbrock, whose curved valley amplifies rounding differences later in the run."""
    if name == "rosenbrock":
        fun, x0, kw = _rosen_fg, torch.tensor(np.tile([-1.2, 1.0], n // 2)), {"jac": True}
    else:
        fun, x0, kw = _logreg(torch.float64), torch.zeros(n, dtype=torch.float64), {}
    assert host_eligible(x0, x0, 1.0, ())
    r_host, _ = _host_and_tensor_runs_agree(_run, fun, x0, iters, monkeypatch, **kw)
    assert isinstance(r_host.x, torch.Tensor) and r_host.x.dtype == torch.float64


def test_host_iterates_equal_generic_float32(monkeypatch: pytest.MonkeyPatch) -> None:
    fun, x0 = _logreg(torch.float32), torch.zeros(12, dtype=torch.float32)
    r_host, x_host = _run(fun, x0, True, monkeypatch)
    r_gen, x_gen = _run(fun, x0, False, monkeypatch)
    assert r_host.success and r_gen.success and r_host.x.dtype == torch.float32
    k = min(len(x_host), len(x_gen), 10)
    torch.testing.assert_close(x_host[:k], x_gen[:k], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(r_host.x, r_gen.x, rtol=1e-3, atol=1e-4)


def test_eligibility() -> None:
    x = torch.zeros(5, dtype=torch.float64)
    assert host_eligible(x, x, 1.0, ())
    assert not host_eligible(torch.zeros(HOST_MAX_N + 1, dtype=torch.float64), x, 1.0, ())
    assert not host_eligible(x.half(), x.half(), 1.0, ())
    assert not host_eligible(x, x.float(), 1.0, ())  # a gradient of another dtype
    assert not host_eligible(x, x, torch.ones(5), ())  # a float32 lr for a float64 x
    assert not host_eligible(x, x, 1.0, (torch.zeros(5),))  # float32 pairs


def _three_lbfgs_steps() -> torch.Tensor:
    torch.manual_seed(0)
    x = torch.randn(64, 3, dtype=torch.float64)
    y = (x[:, 0] > 0).double()
    model = torch.nn.Linear(3, 1).double()
    opt = LBFGS(model.parameters(), history_size=5, max_iter=4)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x).squeeze(1), y)
        loss = loss + 1e-3 * model.weight.square().sum()
        loss.backward()
        return loss

    for _ in range(3):
        opt.step(closure)
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def test_memory_carried_across_torch_optim_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    """natrl.optim.LBFGS keeps the pairs between steps: host and generic give the same parameters."""
    on_host = _three_lbfgs_steps()
    monkeypatch.setattr(quasi_newton, "host_eligible", lambda *a: False)
    generic = _three_lbfgs_steps()
    torch.testing.assert_close(on_host, generic, rtol=1e-10, atol=1e-12)
    assert math.isfinite(float(on_host.sum()))


def test_objective_fg_numpy_equals_fg() -> None:
    """``Objective.fg_numpy`` (minimize's evaluation on the host path) gives what ``fg`` gives, with
    the same counts, for regular (loss tensor, flat gradient) and other accepted outputs, and the
    same error for a gradient of the wrong size."""
    from natrl.optim.objective import Objective

    x2 = torch.arange(6, dtype=torch.float64).reshape(2, 3)
    outputs = {
        "regular": lambda x: ((x * x).sum(), 2.0 * x.reshape(-1)),
        "float loss, shaped float32 grad": lambda x: (float((x * x).sum()), (2.0 * x).float()),
        "0-d loss of shape (1,)": lambda x: ((x * x).sum().reshape(1), 2.0 * x.reshape(-1)),
    }
    for name, fun in outputs.items():
        a, b = Objective(fun, x2, jac=True), Objective(fun, x2, jac=True)
        for theta in (x2.reshape(-1), x2.reshape(-1) + 0.5, x2.reshape(-1) - 1.0):
            f_ref, g_ref = a.fg(theta.clone())
            f, g = b.fg_numpy(theta.clone().numpy())
            assert isinstance(f, float) and isinstance(g, np.ndarray), name
            assert f == float(f_ref) and g.shape == (6,), name
            np.testing.assert_array_equal(g, g_ref.numpy(), err_msg=name)
        assert (b.nfev, b.njev) == (a.nfev, a.njev) == (3, 3), name
    calls = iter([torch.zeros(6), torch.zeros(5)])
    obj = Objective(lambda x: (x.sum(), next(calls)), torch.zeros(6), jac=True)
    obj.fg_numpy(np.zeros(6, dtype=np.float32))
    with pytest.raises(ValueError, match=r"the gradient has shape \(5,\), expected \(6,\)"):
        obj.fg_numpy(np.zeros(6, dtype=np.float32))


# --- BFGS: the same host path (NumPy views, the update as two outer products) -----------------


def _run_bfgs(fun, x0: torch.Tensor, host: bool, monkeypatch: pytest.MonkeyPatch, **kw):  # type: ignore[no-untyped-def]
    """BFGS on one path (the updates of H: the NumPy update, or :func:`bfgs_update` on tensors)."""
    steps = (quasi_newton, "_bfgs_update_host"), (quasi_newton, "bfgs_update")
    return _run_on_path("bfgs", *steps, fun, x0, host, monkeypatch, **kw)


@pytest.mark.parametrize("n", [5, 12])
def test_bfgs_host_update_equals_bfgs_update(n: int) -> None:
    """The NumPy update (two outer products) gives :func:`bfgs_update`'s H₊, which satisfies the secant equation."""
    gen = torch.Generator().manual_seed(n)
    a = torch.randn(n, n, generator=gen, dtype=torch.float64)
    h = a @ a.T + torch.eye(n, dtype=torch.float64)
    s = torch.randn(n, generator=gen, dtype=torch.float64)
    y = s + 0.1 * torch.randn(n, generator=gen, dtype=torch.float64)
    ref, skipped = quasi_newton.bfgs_update(h, s, y)
    out, skipped_host = quasi_newton._bfgs_update_host(h.numpy(), s.numpy(), y.numpy(), skip_tol=2.2e-16)
    assert not skipped and not skipped_host
    torch.testing.assert_close(torch.from_numpy(out), ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(torch.from_numpy(out) @ y, s, rtol=1e-10, atol=1e-10)  # H₊ y = s
    assert quasi_newton._bfgs_update_host(h.numpy(), s.numpy(), -s.numpy(), skip_tol=2.2e-16)[1]  # yᵀs < 0


@pytest.mark.parametrize(("name", "iters"), [("rosenbrock", 40), ("logreg", None)])
def test_bfgs_host_iterates_equal_generic(name: str, iters: int | None, monkeypatch: pytest.MonkeyPatch) -> None:
    """BFGS on the host and on tensors: the same iterates to 1e-8 (relative), over the whole run
    (logistic regression) or the first 40 iterations (Rosenbrock n = 10, whose curved valley
    amplifies rounding differences later on)."""
    if name == "rosenbrock":
        fun, x0, kw = _rosen_fg, torch.tensor(np.tile([-1.2, 1.0], 5)), {"jac": True}
    else:
        fun, x0, kw = _logreg(torch.float64), torch.zeros(12, dtype=torch.float64), {}
    r_host, r_gen = _host_and_tensor_runs_agree(_run_bfgs, fun, x0, iters, monkeypatch, **kw)
    assert isinstance(r_host.hess_inv, torch.Tensor) and r_host.hess_inv.dtype == torch.float64
    torch.testing.assert_close(r_host.hess_inv, r_gen.hess_inv, rtol=1e-3, atol=1e-3)
