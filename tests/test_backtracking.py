"""KL-constrained backtracking against closed-form quadratic losses and KLs."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from natrl.linesearch import BacktrackingResult, backtracking

N = 6


def _quadratic_problem(seed: int, f_scale: float = 1.0) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """θ₀, H (loss Hessian), c, F (KL Hessian), and the natural step direction F⁻¹(−∇L(θ₀))."""
    g = torch.Generator().manual_seed(seed)
    theta0 = torch.randn(N, generator=g, dtype=torch.float64)
    x = torch.randn(N, N, generator=g, dtype=torch.float64)
    h = x @ x.T / N + 0.1 * torch.eye(N, dtype=torch.float64)
    c = torch.randn(N, generator=g, dtype=torch.float64)
    f = f_scale * torch.diag(torch.rand(N, generator=g, dtype=torch.float64) + 0.5)
    direction = torch.linalg.solve(f, c - h @ theta0)  # F⁻¹(−∇L(θ₀))
    return theta0, h, c, f, direction


@pytest.mark.parametrize(
    ("seed", "kl_multiple", "shrink", "f_scale"),
    [
        (0, 2.5, 0.5, 1.0),
        (1, 10.0, 0.5, 1.0),
        (2, 0.5, 0.5, 1.0),
        (3, 30.0, 0.8, 1.0),
        (4, 3.0, 0.3, 1.0),
        (5, 0.5, 0.5, 1e-5),  # tiny KL curvature: a huge step overshoots the loss (k = 3)
        (6, 50.0, 0.7, 1e-5),  # KL needs k ≥ 6, improvement k ≥ 12
    ],
)
def test_accepts_predicted_fraction_on_quadratic(seed: int, kl_multiple: float, shrink: float, f_scale: float) -> None:
    # L(θ) = ½θᵀHθ − cᵀθ,  KL(θ) = ½(θ−θ₀)ᵀF(θ−θ₀).  Along θ₀ + t s (closed form):
    #   KL(t) = ½ t² sᵀFs,   L(θ₀) − L(θ₀ + t s) = t e − ½ t² sᵀHs,   e = −∇L(θ₀)ᵀs.
    theta0, h, c, f, direction = _quadratic_problem(seed, f_scale)
    max_kl = 0.01
    # scale the full step so that its KL is kl_multiple · max_kl
    s = direction * math.sqrt(2 * kl_multiple * max_kl / (direction @ f @ direction).item())
    grad = h @ theta0 - c
    e = -(grad @ s).item()
    shs, sfs = (s @ h @ s).item(), (s @ f @ s).item()

    def loss(theta: Tensor) -> Tensor:
        return 0.5 * theta @ h @ theta - c @ theta

    def evaluate(theta: Tensor) -> tuple[Tensor, Tensor]:
        d = theta - theta0
        return loss(theta), 0.5 * d @ f @ d

    expected_k = next(
        k
        for k in range(100)
        if 0.5 * shrink ** (2 * k) * sfs <= max_kl and shrink**k * e - 0.5 * shrink ** (2 * k) * shs > 0
    )
    t = shrink**expected_k
    theta0_copy = theta0.clone()
    res = backtracking(evaluate, theta0, s, expected_improvement=e, max_kl=max_kl, shrink=shrink, max_backtracks=50)

    assert isinstance(res, BacktrackingResult)
    assert res.accepted, res.reason
    assert res.step_fraction == t
    assert res.n_trials == expected_k + 1
    torch.testing.assert_close(res.params, theta0 + t * s)
    assert res.kl == pytest.approx(0.5 * t**2 * sfs)
    assert res.kl <= max_kl
    assert res.improvement == pytest.approx(t * e - 0.5 * t**2 * shs)
    assert res.improvement > 0
    assert res.loss == pytest.approx(loss(theta0).item() - res.improvement)
    assert res.expected_improvement == pytest.approx(t * e)
    assert res.reason.startswith("accepted")
    assert torch.equal(theta0, theta0_copy)  # never modified in place
    assert res.params is not theta0


def test_hand_computed_one_dimensional() -> None:
    # L(θ) = (θ − 1)², KL(θ) = θ²/2, θ₀ = 0, s = 2: L₀ = 1, e = −L'(0)·s = 4.
    # t = 1: θ = 2, KL = 2 > 1;  t = 1/2: θ = 1, KL = 1/2 ≤ 1, L = 0 → accepted.
    def evaluate(theta: Tensor) -> tuple[float, float]:
        return ((theta - 1.0) ** 2).sum().item(), 0.5 * (theta**2).sum().item()

    res = backtracking(evaluate, torch.zeros(1), torch.full((1,), 2.0), expected_improvement=4.0, max_kl=1.0)
    assert res.accepted and res.step_fraction == 0.5 and res.n_trials == 2
    assert res.loss == 0.0 and res.kl == 0.5 and res.improvement == 1.0 and res.expected_improvement == 2.0
    assert torch.equal(res.params, torch.ones(1))


def test_kl_slack_allows_slightly_larger_kl() -> None:
    def evaluate(theta: Tensor) -> tuple[float, float]:
        return -theta.sum().item(), 0.012 * theta.sum().item() ** 2  # full step: KL = 0.012

    args = (evaluate, torch.zeros(1), torch.ones(1))
    strict = backtracking(*args, expected_improvement=1.0, max_kl=0.01)
    slack = backtracking(*args, expected_improvement=1.0, max_kl=0.01, kl_slack=1.5)
    assert strict.step_fraction == 0.5
    assert slack.step_fraction == 1.0


def test_failure_returns_original_tensor_untouched() -> None:
    params = torch.randn(5, dtype=torch.float32, generator=torch.Generator().manual_seed(0))
    copy = params.clone()
    ptr = params.data_ptr()
    seen: list[Tensor] = []

    def evaluate(theta: Tensor) -> tuple[Tensor, Tensor]:
        seen.append(theta)
        theta.mul_(0.0)  # a careless evaluate that clobbers its input must not reach params
        return torch.tensor(-1.0), torch.tensor(0.031)  # improves, but KL always too big

    res = backtracking(
        evaluate,
        params,
        torch.ones(5),
        expected_improvement=1.0,
        max_kl=0.01,
        loss0=0.0,
        max_backtracks=10,
    )
    assert not res.accepted
    assert res.params is params
    assert torch.equal(res.params, copy) and params.data_ptr() == ptr
    assert res.n_trials == 11 and len(seen) == 11
    assert all(t is not params for t in seen)
    assert res.step_fraction == 0.0 and res.improvement == 0.0 and res.kl == 0.0
    assert res.loss == 0.0 and res.expected_improvement == 0.0
    assert res.reason == "KL 0.031 > max_kl 0.01 after 10 backtracks"


def test_no_improvement_reason_and_loss0_default() -> None:
    calls: list[float] = []

    def evaluate(theta: Tensor) -> tuple[float, float]:
        calls.append(theta.item())
        return 1.0 + theta.item() ** 2, 0.0  # minimum at the start: every step is worse

    params = torch.zeros(1)
    res = backtracking(evaluate, params, torch.ones(1), expected_improvement=1.0, max_kl=0.1, max_backtracks=3)
    assert not res.accepted and res.params is params
    assert "no improvement" in res.reason and res.reason.endswith("after 3 backtracks")
    assert calls == [0.0, 1.0, 0.5, 0.25, 0.125]  # loss0 at params first, then the trials
    assert res.loss == 1.0 and res.n_trials == 4


def test_given_loss0_is_used_instead_of_evaluating() -> None:
    calls: list[float] = []

    def evaluate(theta: Tensor) -> tuple[float, float]:
        calls.append(theta.item())
        return 5.0 - theta.item(), 0.0

    res = backtracking(evaluate, torch.zeros(1), torch.ones(1), expected_improvement=1.0, max_kl=0.1, loss0=4.5)
    assert calls[0] == 1.0  # the start was not evaluated
    assert res.accepted and res.step_fraction == 1.0 and res.improvement == 0.5
    low = backtracking(evaluate, torch.zeros(1), torch.ones(1), expected_improvement=1.0, max_kl=0.1, loss0=3.0)
    assert not low.accepted and "no improvement" in low.reason


def test_non_finite_trials_are_rejected() -> None:
    def evaluate(theta: Tensor) -> tuple[float, float]:
        t = theta.item()
        if t > 0.6:
            return math.nan, 0.0
        if t > 0.3:
            return -t, math.inf
        return -t, 0.0

    res = backtracking(evaluate, torch.zeros(1), torch.ones(1), expected_improvement=1.0, max_kl=0.1, loss0=0.0)
    assert res.accepted and res.step_fraction == 0.25 and res.n_trials == 3

    nan_everywhere = backtracking(
        lambda theta: (math.nan, 0.0),
        torch.zeros(1),
        torch.ones(1),
        expected_improvement=1.0,
        max_kl=0.1,
        loss0=0.0,
        max_backtracks=2,
    )
    assert not nan_everywhere.accepted
    assert nan_everywhere.reason == "non-finite loss (nan) after 2 backtracks"
    inf_kl = backtracking(
        lambda theta: (-1.0, torch.tensor(math.inf)),
        torch.zeros(1),
        torch.ones(1),
        expected_improvement=1.0,
        max_kl=0.1,
        loss0=0.0,
    )
    assert not inf_kl.accepted and "non-finite KL" in inf_kl.reason


@pytest.mark.parametrize(("accept_ratio", "fraction"), [(0.0, 1.0), (0.4, 1.0), (0.6, 0.5), (0.8, 0.25)])
def test_accept_ratio_enforced(accept_ratio: float, fraction: float) -> None:
    # Along the step, L(t) = −t e + ½ t² q with e = q = 1: improvement(t) / (t e) = 1 − t/2,
    # i.e. 0.5 at t = 1, 0.75 at t = 1/2, 0.875 at t = 1/4 (by hand).
    def evaluate(theta: Tensor) -> tuple[float, float]:
        t = theta.item()
        return -t + 0.5 * t**2, 0.0

    res = backtracking(
        evaluate,
        torch.zeros(1),
        torch.ones(1),
        expected_improvement=1.0,
        max_kl=0.1,
        accept_ratio=accept_ratio,
    )
    assert res.accepted and res.step_fraction == fraction
    assert res.improvement > accept_ratio * res.expected_improvement


def test_accept_ratio_failure_reason() -> None:
    res = backtracking(
        lambda theta: (-theta.item() + 0.5 * theta.item() ** 2, 0.0),
        torch.zeros(1),
        torch.ones(1),
        expected_improvement=1.0,
        max_kl=0.1,
        accept_ratio=0.6,
        max_backtracks=0,
    )
    assert not res.accepted and res.n_trials == 1
    assert res.reason.startswith("insufficient improvement 0.5 ≤ accept_ratio 0.6")


def test_requires_grad_params_give_detached_result() -> None:
    params = torch.zeros(3, requires_grad=True)
    res = backtracking(
        lambda theta: (-theta.sum(), torch.tensor(0.0)),
        params,
        torch.ones(3),
        expected_improvement=3.0,
        max_kl=0.1,
    )
    assert res.accepted and not res.params.requires_grad
    assert torch.equal(res.params, torch.ones(3))
    assert torch.equal(params.detach(), torch.zeros(3))


def _ok_evaluate(theta: Tensor) -> tuple[float, float]:
    return -theta.sum().item(), 0.0


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"max_kl": 0.0}, ValueError, "max_kl"),
        ({"max_kl": math.nan}, ValueError, "max_kl"),
        ({"shrink": 1.0}, ValueError, "shrink"),
        ({"shrink": 0.0}, ValueError, "shrink"),
        ({"max_backtracks": -1}, ValueError, "max_backtracks"),
        ({"max_backtracks": 2.0}, TypeError, "max_backtracks"),
        ({"kl_slack": 0.9}, ValueError, "kl_slack"),
        ({"accept_ratio": 1.0}, ValueError, "accept_ratio"),
        ({"accept_ratio": -0.1}, ValueError, "accept_ratio"),
        ({"expected_improvement": -1.0}, ValueError, "expected_improvement"),
        ({"expected_improvement": math.inf}, ValueError, "expected_improvement"),
        ({"full_step": torch.ones(3)}, ValueError, "shape"),
        ({"full_step": torch.ones(2, dtype=torch.float64)}, TypeError, "dtype"),
        ({"full_step": torch.tensor([1.0, math.nan])}, ValueError, "full_step contains non-finite"),
        ({"params": [0.0, 0.0]}, TypeError, "params must be a floating-point Tensor"),
        ({"params": torch.zeros(2, dtype=torch.int64)}, TypeError, "params"),
        ({"loss0": math.nan}, ValueError, "loss at the starting parameters is not finite"),
        ({"evaluate": lambda theta: (0.0, 0.0, 0.0)}, TypeError, "pair"),
        ({"evaluate": lambda theta: (theta, 0.0)}, TypeError, "loss must be a real scalar"),
    ],
)
def test_bad_arguments(kwargs: dict, error: type[Exception], match: str) -> None:
    args = {
        "evaluate": _ok_evaluate,
        "params": torch.zeros(2),
        "full_step": torch.ones(2),
        "expected_improvement": 2.0,
        "max_kl": 0.01,
    } | kwargs
    with pytest.raises(error, match=match):
        backtracking(args.pop("evaluate"), args.pop("params"), args.pop("full_step"), **args)
