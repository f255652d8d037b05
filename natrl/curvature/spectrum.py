"""Spectral diagnostics of a symmetric operator given only as a matvec ``v -> M v``.

Works on any operator of :mod:`natrl.curvature` (Hessian, GGN, Fisher, KL-Hessian,
empirical Fisher), or any other symmetric matvec, on any device. The matrix M (n × n) is
never formed.

* :func:`lanczos`: extreme eigenvalues and eigenvectors (top-k, bottom-k or both ends) by
  the Lanczos process with full reorthogonalisation (Golub & Van Loan 2013, §10.1, §10.3).
* :func:`power_iteration`: the k eigenvalues of largest magnitude, one at a time with
  deflation (the simple method PyHessian uses; Golub & Van Loan 2013, §8.2.1).
* :func:`hutchinson_trace`: tr(M) ≈ (1/s) Σᵢ zᵢᵀ M zᵢ with a Student-t confidence
  interval (Hutchinson 1989; Avron & Toledo 2011).
* :func:`hutchpp_trace`: tr(M) by Hutch++, a low-rank sketch taken exactly plus Hutchinson on
  the rest (Meyer, Musco, Musco & Woodruff 2021): error O(1/m) instead of O(1/√m) for m
  matvecs on a PSD M.
* :func:`hutchinson_diagonal`: diag(M) ≈ (1/s) Σᵢ zᵢ ⊙ M zᵢ (Bekas, Kokiopoulou & Saad 2007).
* :func:`spectral_density`: the eigenvalue density by stochastic Lanczos quadrature
  (Ubaru, Chen & Saad 2017; Ghorbani, Krishnan & Xiao 2019; Yao et al. 2020, PyHessian).
* :func:`condition_number`: κ = λ_max / λ_min from one Lanczos run at both ends.

Randomness: every function draws its random vectors from ``generator`` (on the generator's
device, then moved to ``device``), so a seeded generator makes the result deterministic;
the global RNG is used only when ``generator`` is None.

The operator's dtype and device are not visible from a matvec: pass ``dtype`` and
``device`` of the operator's parameters (the operators of :mod:`natrl.curvature` refuse
vectors of another dtype or device). Small tridiagonal eigenproblems are solved in float64
on the CPU.

References:
    Golub & Van Loan (2013), "Matrix Computations", 4th ed., Johns Hopkins, §8.2, §10.1-10.3.
    Hutchinson (1989), "A stochastic estimator of the trace of the influence matrix for
    Laplacian smoothing splines", Comm. Statist. Simulation Comput. 18(3).
    Avron & Toledo (2011), "Randomized algorithms for estimating the trace of an implicit
    symmetric positive semi-definite matrix", J. ACM 58(2).
    Meyer, Musco, Musco & Woodruff (2021), "Hutch++: Optimal stochastic trace estimation",
    SOSA (SIAM Symposium on Simplicity in Algorithms).
    Bekas, Kokiopoulou & Saad (2007), "An estimator for the diagonal of a matrix", Applied
    Numerical Mathematics 57(11-12).
    Ubaru, Chen & Saad (2017), "Fast estimation of tr(f(A)) via stochastic Lanczos
    quadrature", SIAM J. Matrix Anal. Appl. 38(4).
    Ghorbani, Krishnan & Xiao (2019), "An investigation into neural net optimization via
    Hessian eigenvalue density", ICML.
    Yao, Gholami, Keutzer & Mahoney (2020), "PyHessian: Neural networks through the lens of
    the Hessian", IEEE BigData.
"""

from __future__ import annotations

import math
import numbers
import statistics
from collections.abc import Callable
from typing import Literal, NamedTuple

import torch
from torch import Tensor

from natrl.curvature.operators import Matvec

__all__ = [
    "ConditionNumber",
    "Density",
    "DiagonalEstimate",
    "EigResult",
    "HutchppEstimate",
    "TraceEstimate",
    "condition_number",
    "hutchinson_diagonal",
    "hutchinson_trace",
    "hutchpp_trace",
    "lanczos",
    "power_iteration",
    "spectral_density",
    "student_t_quantile",
]

Which = Literal["largest", "smallest", "both"]
Probe = Literal["rademacher", "gaussian"]


class EigResult(NamedTuple):
    """Approximate eigenpairs of a symmetric operator.

    Attributes:
        eigenvalues: shape (k,), in ``dtype`` on ``device``; order: descending for
            ``which="largest"``, ascending for ``"smallest"`` and ``"both"``, by decreasing
            magnitude for :func:`power_iteration`.
        eigenvectors: shape (n, k), unit columns, ``eigenvectors[:, i]`` paired with
            ``eigenvalues[i]``.
        residual_norms: shape (k,), ‖M vᵢ − λᵢ vᵢ‖₂ (for Lanczos the Ritz estimate
            |β_m sₘᵢ|; for power iteration measured at the last matvec).
        iterations: number of matvecs used.
        converged: whether every residual met the tolerance (or the Krylov space was
            exhausted, which makes the Ritz pairs exact).
    """

    eigenvalues: Tensor
    eigenvectors: Tensor
    residual_norms: Tensor
    iterations: int
    converged: bool


class TraceEstimate(NamedTuple):
    """Hutchinson's estimate of tr(M) with its confidence interval.

    Attributes:
        trace: the sample mean of zᵢᵀ M zᵢ.
        stderr: the standard error, sample standard deviation / √s (0 for s = 1).
        ci_low: lower end of the two-sided Student-t interval at the requested confidence.
        ci_high: upper end (ci_low = ci_high = trace when s = 1 or the samples agree).
        samples: s, the number of probe vectors (= matvecs) used.
        values: the s samples zᵢᵀ M zᵢ, shape (s,), float64 on the CPU.
    """

    trace: float
    stderr: float
    ci_low: float
    ci_high: float
    samples: int
    values: Tensor


class HutchppEstimate(NamedTuple):
    """Hutch++'s estimate of tr(M) = tr(QᵀMQ) + tr((I − QQᵀ) M (I − QQᵀ)).

    Attributes:
        trace: low_rank_trace + the mean of ``values``.
        stderr: the standard error of that mean (0 with one sample); the low-rank part is
            exact given Q.
        ci_low: lower end of the two-sided Student-t interval at the requested confidence.
        ci_high: upper end.
        matvecs: products used in all: k (sketch M S) + k (M Q) + s (residual probes).
        rank: k, the number of columns of Q.
        low_rank_trace: tr(QᵀMQ).
        values: the s residual samples gᵢᵀ(I − QQᵀ) M (I − QQᵀ)gᵢ, shape (s,), float64 on the CPU.
    """

    trace: float
    stderr: float
    ci_low: float
    ci_high: float
    matvecs: int
    rank: int
    low_rank_trace: float
    values: Tensor


class DiagonalEstimate(NamedTuple):
    """Hutchinson's estimate of diag(M).

    Attributes:
        diagonal: (1/s) Σᵢ zᵢ ⊙ M zᵢ, shape (n,), in ``dtype`` on ``device``.
        stderr: per entry, the sample standard deviation of zᵢ ⊙ M zᵢ over √s, shape (n,)
            (zeros for s = 1).
        samples: s, the number of probes (= matvecs).
    """

    diagonal: Tensor
    stderr: Tensor
    samples: int


class Density(NamedTuple):
    """Eigenvalue density from stochastic Lanczos quadrature.

    The spectral measure μ = (1/n) Σⱼ δ(λⱼ) is approximated by the average over R runs of
    the Gauss quadrature rules Σₖ τₖ⁽ʳ⁾ δ(θₖ⁽ʳ⁾), each with weights summing to 1, and
    smoothed with a Gaussian kernel of width σ.

    Attributes:
        grid: points t, shape (G,), float64 on the CPU.
        density: φ(t) = (1/R) Σᵣ Σₖ τₖ⁽ʳ⁾ N(t; θₖ⁽ʳ⁾, σ²), shape (G,); integrates to ≈ 1.
        nodes: Ritz values θ, shape (R, m) float64 (rows padded with NaN where a run's
            Krylov space ended before m steps).
        weights: quadrature weights τ, shape (R, m) float64 (0 where padded); rows sum to 1.
        sigma: the kernel width σ used.
        n: the dimension of the operator.
    """

    grid: Tensor
    density: Tensor
    nodes: Tensor
    weights: Tensor
    sigma: float
    n: int

    def trace_of(self, fn: Callable[[Tensor], Tensor]) -> float:
        """SLQ estimate of tr f(M) = n · (1/R) Σᵣ Σₖ τₖ⁽ʳ⁾ f(θₖ⁽ʳ⁾) (Ubaru et al. 2017, eq. 3.3).

        Args:
            fn: elementwise function of a float64 tensor, e.g. ``torch.log`` or
                ``lambda x: x`` (which estimates the trace).

        Returns:
            The estimate, a float.
        """
        ok = self.weights > 0
        values = torch.zeros_like(self.nodes)
        values[ok] = fn(self.nodes[ok]).to(values.dtype)
        return float(self.n * (self.weights * values).sum(dim=1).mean())


class ConditionNumber(NamedTuple):
    """Estimate of κ(M) = λ_max / λ_min for a symmetric positive (semi-)definite M.

    Attributes:
        condition_number: λ_max / λ_min, ``inf`` when λ_min ≤ 0 (singular or indefinite).
        largest: the estimate of λ_max.
        smallest: the estimate of λ_min.
        iterations: number of matvecs used.
        converged: whether both extreme Ritz values met the Lanczos tolerance.
    """

    condition_number: float
    largest: float
    smallest: float
    iterations: int
    converged: bool


# --------------------------------------------------------------------------- checks


def _check_n(n: int, where: str) -> int:
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise ValueError(f"{where}: n must be a positive int, got {n!r}")
    return int(n)


def _check_count(value: int, name: str, where: str, *, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{where}: {name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def _check_positive(value: float, name: str, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (math.isfinite(value) and value > 0):
        raise ValueError(f"{where}: {name} must be a finite number > 0, got {value!r}")
    return float(value)


def _resolve(
    dtype: torch.dtype | None, device: torch.device | str | None, where: str
) -> tuple[torch.dtype, torch.device]:
    dt = torch.get_default_dtype() if dtype is None else dtype
    if not isinstance(dt, torch.dtype) or not dt.is_floating_point:
        raise ValueError(f"{where}: dtype must be a floating torch.dtype, got {dtype!r}")
    return dt, torch.device("cpu" if device is None else device)


def _apply(matvec: Matvec, v: Tensor, where: str) -> Tensor:
    out = matvec(v)
    if not isinstance(out, Tensor) or out.shape != v.shape:
        got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(f"{where}: matvec must return a tensor of shape {tuple(v.shape)}, got {got}")
    if not bool(torch.isfinite(out).all()):
        raise ValueError(f"{where}: matvec returned non-finite values (NaN or inf)")
    return out.detach().to(v.dtype)


def _random(
    n: int,
    kind: Probe,
    generator: torch.Generator | None,
    dtype: torch.dtype,
    device: torch.device,
) -> Tensor:
    """A Rademacher (±1) or standard normal vector (n,), drawn from ``generator``."""
    gen_device = generator.device if generator is not None else device
    if kind == "rademacher":
        bits = torch.randint(0, 2, (n,), generator=generator, device=gen_device)
        z = bits.to(dtype).mul_(2).sub_(1)
    else:
        z = torch.randn(n, generator=generator, device=gen_device, dtype=dtype)
    return z.to(device)


def _orthogonalise(w: Tensor, basis: Tensor) -> Tensor:
    """w − Q Qᵀ w, done twice (classical Gram-Schmidt, "twice is enough"); basis is (m, n)."""
    if basis.shape[0] == 0:
        return w
    for _ in range(2):
        w = w - basis.t().mv(basis.mv(w))
    return w


def _tridiagonal(alphas: list[float], betas: list[float]) -> Tensor:
    """Dense symmetric tridiagonal T (float64, CPU) with diagonal α and off-diagonal β."""
    m = len(alphas)
    t = torch.diag(torch.tensor(alphas, dtype=torch.float64))
    if m > 1:
        off = torch.tensor(betas[: m - 1], dtype=torch.float64)
        t = t + torch.diag(off, 1) + torch.diag(off, -1)
    return t


def _wanted(m: int, k: int, which: Which) -> Tensor:
    """Indices into ascending Ritz values θ₀ ≤ … ≤ θ_{m−1} of the k wanted ones, in output order."""
    if which == "largest":
        return torch.arange(m - 1, m - 1 - k, -1)
    if which == "smallest":
        return torch.arange(k)
    k_hi = (k + 1) // 2
    return torch.cat([torch.arange(k - k_hi), torch.arange(m - k_hi, m)])


# --------------------------------------------------------------------------- Lanczos


def lanczos(
    matvec: Matvec,
    n: int,
    *,
    k: int = 1,
    which: Which = "largest",
    max_iter: int | None = None,
    tol: float | None = None,
    generator: torch.Generator | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> EigResult:
    """Extreme eigenpairs of a symmetric operator by Lanczos with full reorthogonalisation.

    From a random unit q₁ the Lanczos recurrence builds an orthonormal basis Q_m = [q₁ … q_m]
    of the Krylov space span{q₁, M q₁, …, M^{m−1} q₁} and the tridiagonal T_m = Q_mᵀ M Q_m:

        w = M q_j − β_{j−1} q_{j−1},   α_j = q_jᵀ w,   w ← w − α_j q_j,
        w ← w − Q_j Q_jᵀ w (twice),    β_j = ‖w‖,      q_{j+1} = w / β_j

    (Golub & Van Loan 2013, Algorithm 10.1.1, with the full reorthogonalisation of §10.3.1,
    which keeps Q_m orthonormal to working precision and prevents spurious copies of
    converged Ritz values). With T_m = S diag(θ) Sᵀ, the Ritz pairs (θᵢ, Q_m sᵢ) have residual
    ‖M Q_m sᵢ − θᵢ Q_m sᵢ‖ = β_m |s_{m,i}|; the run stops when the wanted ones are at most
    ``tol`` · max|θ| (checked at every step for m < 30, then every 5 steps).

    If β_j vanishes (an invariant subspace: its Ritz values are exact eigenvalues), the
    process restarts from a random vector orthogonal to Q_j, with a zero coupling in T, so
    that repeated eigenvalues are found as many times as they occur; it stops at such a
    point only once a restarted chain changes none of the wanted values.

    Cost: one matvec and O(m n) work per step; memory: ``max_iter`` vectors of length n.

    Args:
        matvec: symmetric ``v (n,) -> M v (n,)``.
        n: the dimension.
        k: number of eigenpairs wanted (k ≤ n; k ≥ 2 for ``"both"``).
        which: ``"largest"`` (algebraically largest k, descending), ``"smallest"``
            (algebraically smallest k, ascending) or ``"both"`` (⌈k/2⌉ from the top and
            ⌊k/2⌋ from the bottom, all ascending, as scipy's ``eigsh(which="BE")``).
        max_iter: most Lanczos steps (= matvecs); min(n, max(100, 10 k)) by default.
        tol: relative residual tolerance; √ε of ``dtype`` by default (about 3e-4 in float32,
            1.5e-8 in float64), which gives eigenvalues to about ε relative accuracy when
            they are well separated (the error is ≈ residual² / gap).
        generator: source of the start vector (and of restart vectors).
        dtype: dtype of the vectors given to ``matvec`` (the operator's); default dtype if None.
        device: their device; CPU if None.

    Returns:
        An :class:`EigResult`.

    Raises:
        ValueError: on bad arguments, or if ``matvec`` returns a wrong shape or non-finite values.

    Reference: Golub & Van Loan (2013), "Matrix Computations", 4th ed., §10.1 and §10.3.
    """
    where = "lanczos"
    n = _check_n(n, where)
    if which not in ("largest", "smallest", "both"):
        raise ValueError(f"{where}: which must be 'largest', 'smallest' or 'both', got {which!r}")
    k = _check_count(k, "k", where, minimum=2 if which == "both" else 1)
    if k > n:
        raise ValueError(f"{where}: k={k} exceeds the dimension n={n}")
    dt, dev = _resolve(dtype, device, where)
    steps = min(n, max(100, 10 * k)) if max_iter is None else _check_count(max_iter, "max_iter", where)
    steps = min(steps, n)
    if steps < k:
        raise ValueError(f"{where}: max_iter={steps} must be >= k={k}")
    eps = torch.finfo(dt).eps
    rtol = math.sqrt(eps) if tol is None else _check_positive(tol, "tol", where)
    breakdown_tol = 100.0 * eps

    basis = torch.empty(steps, n, dtype=dt, device=dev)
    q = _random(n, "gaussian", generator, dt, dev)
    basis[0] = q / q.norm()
    alphas: list[float] = []
    betas: list[float] = []
    chain_start = 0
    old_theta: Tensor | None = None  # Ritz values of T before the current chain
    theta = torch.empty(0, dtype=torch.float64)
    vecs = torch.empty(0, 0, dtype=torch.float64)
    beta = 0.0
    norm_bound = 0.0
    converged = False
    m = 0
    for j in range(steps):
        qj = basis[j]
        w = _apply(matvec, qj, where)
        alpha = float(qj.dot(w))
        w = w - alpha * qj
        if j > chain_start:
            w = w - betas[j - 1] * basis[j - 1]
        w = _orthogonalise(w, basis[: j + 1])
        beta = float(w.norm())
        alphas.append(alpha)
        m = j + 1
        prev_beta = betas[j - 1] if j > 0 else 0.0
        norm_bound = max(norm_bound, abs(alpha) + beta + prev_beta)  # Gershgorin: ‖T‖ ≤ this
        breakdown = beta <= breakdown_tol * max(norm_bound, torch.finfo(dt).tiny)
        if m == n:
            converged = True
            break
        check = m >= k and (m < 30 or m % 5 == 0 or breakdown or m == steps)
        if check or breakdown:
            theta, vecs = torch.linalg.eigh(_tridiagonal(alphas, betas))
            scale = max(float(theta.abs().max()), torch.finfo(dt).tiny)
        if check:
            wanted = _wanted(m, k, which)
            residuals = beta * vecs[-1, wanted].abs()
            ok = bool((residuals <= rtol * scale).all())
            if ok and breakdown:  # stop only if the newest chain changed none of the wanted values
                ok = (
                    old_theta is not None
                    and old_theta.numel() >= k
                    and bool(
                        ((old_theta[_wanted(old_theta.numel(), k, which)] - theta[wanted]).abs() <= rtol * scale).all()
                    )
                )
            if ok:
                converged = True
                break
        if m == steps:
            break
        if breakdown:  # restart orthogonally to the invariant subspace found
            fresh = _orthogonalise(_random(n, "gaussian", generator, dt, dev), basis[:m])
            norm = float(fresh.norm())
            if norm <= breakdown_tol * math.sqrt(n):  # numerically the whole space: exact
                converged = True
                break
            old_theta = theta
            chain_start = m
            betas.append(0.0)
            basis[m] = fresh / norm
        else:
            betas.append(beta)
            basis[m] = w / beta
    theta, vecs = torch.linalg.eigh(_tridiagonal(alphas, betas))
    wanted = _wanted(m, k, which)
    residuals = (beta * vecs[-1, wanted].abs()).to(dt)
    if m == n:
        residuals = torch.zeros_like(residuals)
    eigenvectors = basis[:m].t().mm(vecs[:, wanted].to(dt).to(dev))
    return EigResult(
        eigenvalues=theta[wanted].to(dtype=dt, device=dev),
        eigenvectors=eigenvectors,
        residual_norms=residuals.to(dev),
        iterations=m,
        converged=converged,
    )


# --------------------------------------------------------------------------- power iteration


def power_iteration(
    matvec: Matvec,
    n: int,
    *,
    k: int = 1,
    max_iter: int = 1000,
    tol: float = 1e-4,
    generator: torch.Generator | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> EigResult:
    """The k eigenvalues of largest magnitude by power iteration with deflation.

    For i = 1 … k, from a random unit v orthogonal to v₁ … v_{i−1}:

        w = (I − V Vᵀ) M v (deflation),   λ = vᵀ w,   stop if ‖w − λ v‖ ≤ tol · |λ|,
        v = w / ‖w‖

    The error in v shrinks like |λ_{i+1} / λᵢ|ᵗ after t steps (Golub & Van Loan 2013,
    §8.2.1), so it is slow when the two are close, and it does not converge when λ and −λ
    are both dominant; :func:`lanczos` needs far fewer matvecs for the same accuracy. This is
    the method of PyHessian (Yao et al. 2020), kept as the simple reference option.

    Args:
        matvec: symmetric ``v (n,) -> M v (n,)``.
        n: the dimension.
        k: number of eigenpairs, k ≤ n.
        max_iter: most matvecs per eigenpair.
        tol: relative residual tolerance ‖M v − λ v‖ ≤ tol · |λ|; the eigenvalue error is
            about tol² · |λ|² / gap.
        generator: source of the start vectors.
        dtype: dtype of the vectors given to ``matvec``; default dtype if None.
        device: their device; CPU if None.

    Returns:
        An :class:`EigResult`, eigenvalues by decreasing magnitude.

    Raises:
        ValueError: on bad arguments or a bad ``matvec`` output.

    Reference: Golub & Van Loan (2013), §8.2.1; Yao et al. (2020), PyHessian, Algorithm 1.
    """
    where = "power_iteration"
    n = _check_n(n, where)
    k = _check_count(k, "k", where)
    if k > n:
        raise ValueError(f"{where}: k={k} exceeds the dimension n={n}")
    max_iter = _check_count(max_iter, "max_iter", where)
    rtol = _check_positive(tol, "tol", where)
    dt, dev = _resolve(dtype, device, where)
    found = torch.empty(k, n, dtype=dt, device=dev)
    values = torch.empty(k, dtype=dt, device=dev)
    residuals = torch.empty(k, dtype=dt, device=dev)
    total = 0
    all_converged = True
    for i in range(k):
        v = _orthogonalise(_random(n, "gaussian", generator, dt, dev), found[:i])
        v = v / v.norm()
        lam, res, done = 0.0, math.inf, False
        for _ in range(max_iter):
            w = _orthogonalise(_apply(matvec, v, where), found[:i])  # deflated: (I − V Vᵀ) M v
            total += 1
            lam = float(v.dot(w))
            res = float((w - lam * v).norm())
            if res <= rtol * abs(lam):
                done = True
                break
            norm = float(w.norm())
            if norm == 0.0:  # v in the null space: the remaining eigenvalues are 0
                done = True
                break
            v = w / norm
        found[i] = v
        values[i] = lam
        residuals[i] = res if math.isfinite(res) else 0.0
        all_converged = all_converged and done
    return EigResult(values, found.t().contiguous(), residuals, total, all_converged)


# --------------------------------------------------------------------------- trace


def student_t_quantile(p: float, df: int) -> float:
    """The p-quantile of Student's t distribution with an integer number of degrees of freedom.

    P(|T| ≤ t) has a closed form for integer ν (Abramowitz & Stegun 1964, 26.7.3-26.7.4),
    with θ = atan(t / √ν):

        ν odd:  (2/π) [θ + sin θ (cos θ + (2/3) cos³θ + … + (2·4⋯(ν−3))/(1·3⋯(ν−2)) cos^{ν−2}θ)]
        ν even: sin θ [1 + (1/2) cos²θ + (1·3)/(2·4) cos⁴θ + … + (1·3⋯(ν−3))/(2·4⋯(ν−2)) cos^{ν−2}θ]

    which is inverted by bisection in θ; for ν > 1000 the normal quantile is used (the
    difference is below 1e-3 relative).

    Args:
        p: probability in (0, 1).
        df: degrees of freedom ν ≥ 1.

    Returns:
        t with P(T ≤ t) = p.

    Reference: Abramowitz & Stegun (1964), "Handbook of Mathematical Functions", 26.7.
    """
    if not 0.0 < p < 1.0:
        raise ValueError(f"student_t_quantile: p must be in (0, 1), got {p}")
    df = _check_count(df, "df", "student_t_quantile")
    if p == 0.5:
        return 0.0
    if df > 1000:
        return statistics.NormalDist().inv_cdf(p)
    target = abs(2.0 * p - 1.0)  # P(|T| ≤ t)

    def two_sided(theta: float) -> float:
        s, c = math.sin(theta), math.cos(theta)
        c2 = c * c
        if df % 2 == 1:
            term, acc = c, c if df > 1 else 0.0
            for j in range(3, df - 1, 2):  # terms cos θ, (2/3) cos³θ, …
                term *= c2 * (j - 1) / j
                acc += term
            return 2.0 / math.pi * (theta + s * acc)
        term, acc = 1.0, 1.0
        for j in range(2, df - 1, 2):  # terms 1, (1/2) cos²θ, (1·3)/(2·4) cos⁴θ, …
            term *= c2 * (j - 1) / j
            acc += term
        return s * acc

    lo, hi = 0.0, math.pi / 2
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if two_sided(mid) < target:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-15:
            break
    t = math.sqrt(df) * math.tan(0.5 * (lo + hi))
    return t if p > 0.5 else -t


def hutchinson_trace(
    matvec: Matvec,
    n: int,
    *,
    samples: int = 100,
    generator: torch.Generator | None = None,
    confidence: float = 0.95,
    distribution: Probe = "rademacher",
    rtol: float | None = None,
    min_samples: int = 10,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> TraceEstimate:
    """Hutchinson's stochastic trace estimator with a confidence interval.

    With probes zᵢ of i.i.d. Rademacher (±1) or standard normal entries, E[zᵀ M z] = tr(M), so

        tr(M) ≈ T̂ = (1/s) Σᵢ zᵢᵀ M zᵢ,   SE = std(zᵢᵀ M zᵢ) / √s,
        CI = T̂ ± t_{(1+c)/2, s−1} · SE   (Student t, s − 1 degrees of freedom).

    The single-probe variance is 2 (‖M‖_F² − Σᵢ Mᵢᵢ²) for Rademacher probes (the minimum
    over i.i.d. probes; zero for a diagonal M) and 2 ‖M‖_F² for Gaussian ones (Hutchinson
    1989; Avron & Toledo 2011, §2). The interval treats the mean as approximately normal,
    accurate for s ≳ 30.

    Args:
        matvec: symmetric ``v (n,) -> M v (n,)``.
        n: the dimension.
        samples: the most probes (= matvecs), s ≥ 1.
        generator: source of the probes.
        confidence: level c of the two-sided interval, in (0, 1).
        distribution: ``"rademacher"`` or ``"gaussian"``.
        rtol: if given, stop early once at least ``min_samples`` probes were used and the
            half-width of the interval is ≤ rtol · |T̂|.
        min_samples: fewest probes before the ``rtol`` rule applies (≥ 2).
        dtype: dtype of the probes (the operator's); default dtype if None.
        device: their device; CPU if None.

    Returns:
        A :class:`TraceEstimate`.

    Raises:
        ValueError: on bad arguments or a bad ``matvec`` output.

    Reference: Hutchinson (1989), Comm. Statist. Simulation Comput. 18(3);
    Avron & Toledo (2011), J. ACM 58(2).
    """
    where = "hutchinson_trace"
    n = _check_n(n, where)
    samples = _check_count(samples, "samples", where)
    if isinstance(confidence, bool) or not isinstance(confidence, numbers.Real) or not 0.0 < confidence < 1.0:
        raise ValueError(f"{where}: confidence must be in (0, 1), got {confidence!r}")
    if distribution not in ("rademacher", "gaussian"):
        raise ValueError(f"{where}: distribution must be 'rademacher' or 'gaussian', got {distribution!r}")
    stop_rtol = None if rtol is None else _check_positive(rtol, "rtol", where)
    min_samples = _check_count(min_samples, "min_samples", where, minimum=2)
    dt, dev = _resolve(dtype, device, where)

    values: list[float] = []

    def summary() -> tuple[float, float, float]:
        s = len(values)
        mean = math.fsum(values) / s
        if s < 2:
            return mean, 0.0, 0.0
        var = math.fsum((x - mean) ** 2 for x in values) / (s - 1)
        se = math.sqrt(var / s)
        return mean, se, student_t_quantile(0.5 + 0.5 * float(confidence), s - 1) * se

    for i in range(samples):
        z = _random(n, distribution, generator, dt, dev)
        values.append(float(z.double().dot(_apply(matvec, z, where).double())))
        if stop_rtol is not None and i + 1 >= min_samples:
            mean, _, half = summary()
            if half <= stop_rtol * abs(mean):
                break
    mean, se, half = summary()
    return TraceEstimate(
        trace=mean,
        stderr=se,
        ci_low=mean - half,
        ci_high=mean + half,
        samples=len(values),
        values=torch.tensor(values, dtype=torch.float64),
    )


def _t_interval(values: list[float], confidence: float) -> tuple[float, float, float]:
    """Mean, standard error and Student-t half-width of ``values``."""
    s = len(values)
    mean = math.fsum(values) / s
    if s < 2:
        return mean, 0.0, 0.0
    var = math.fsum((x - mean) ** 2 for x in values) / (s - 1)
    se = math.sqrt(var / s)
    return mean, se, student_t_quantile(0.5 + 0.5 * float(confidence), s - 1) * se


def hutchpp_trace(
    matvec: Matvec,
    n: int,
    *,
    matvecs: int = 30,
    generator: torch.Generator | None = None,
    confidence: float = 0.95,
    distribution: Probe = "rademacher",
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> HutchppEstimate:
    """Hutch++ trace estimator (Meyer, Musco, Musco & Woodruff 2021, Algorithm 1).

    With m matvecs, k = ⌊m/3⌋ (at most n) and s = m − 2k:

        Q = orth(M S),   S (n × k) random probes,
        tr(M) ≈ tr(Qᵀ M Q) + (1/s) Σᵢ gᵢᵀ (I − QQᵀ) M (I − QQᵀ) gᵢ,   gᵢ random probes.

    The sketch captures the top of the spectrum exactly; Hutchinson only estimates the trace
    of the deflated rest, whose Frobenius norm is small when the eigenvalues decay. For a PSD
    M, |error| ≤ ε tr(M) with high probability after O(1/ε) matvecs, where Hutchinson needs
    O(1/ε²). Unbiased for any symmetric M; exact when rank(M) ≤ k. The interval is
    Hutchinson's (Student t) on the residual samples.

    Args:
        matvec: symmetric ``v (n,) -> M v (n,)``.
        n: the dimension.
        matvecs: the budget m ≥ 3 (all are used unless k is capped at n).
        generator: source of the probes.
        confidence: level c of the two-sided interval, in (0, 1).
        distribution: ``"rademacher"`` or ``"gaussian"`` probes.
        dtype: dtype of the probes (the operator's); default dtype if None.
        device: their device; CPU if None.

    Returns:
        A :class:`HutchppEstimate`.

    Raises:
        ValueError: on bad arguments or a bad ``matvec`` output.

    Reference: Meyer, Musco, Musco & Woodruff (2021), "Hutch++: Optimal stochastic trace
    estimation", SOSA, Algorithm 1.
    """
    where = "hutchpp_trace"
    n = _check_n(n, where)
    budget = _check_count(matvecs, "matvecs", where, minimum=3)
    if isinstance(confidence, bool) or not isinstance(confidence, numbers.Real) or not 0.0 < confidence < 1.0:
        raise ValueError(f"{where}: confidence must be in (0, 1), got {confidence!r}")
    if distribution not in ("rademacher", "gaussian"):
        raise ValueError(f"{where}: distribution must be 'rademacher' or 'gaussian', got {distribution!r}")
    dt, dev = _resolve(dtype, device, where)
    k = min(budget // 3, n)
    s = budget - 2 * k
    sketch = torch.stack([_apply(matvec, _random(n, distribution, generator, dt, dev), where) for _ in range(k)], 1)
    q = torch.linalg.qr(sketch.double()).Q  # (n, k), orthonormal columns
    mq = torch.stack([_apply(matvec, q[:, j].to(dt), where).double() for j in range(k)], 1)
    low_rank = float((q * mq).sum())
    values: list[float] = []
    if k < n:
        for _ in range(s):
            g = _random(n, distribution, generator, dt, dev).double()
            r = g - q @ (q.T @ g)
            mr = _apply(matvec, r.to(dt), where).double()
            values.append(float(r.dot(mr - q @ (q.T @ mr))))
    else:
        values.append(0.0)  # Q spans everything: the residual is zero
    mean, se, half = _t_interval(values, float(confidence))
    return HutchppEstimate(
        trace=low_rank + mean,
        stderr=se,
        ci_low=low_rank + mean - half,
        ci_high=low_rank + mean + half,
        matvecs=2 * k + (s if k < n else 0),
        rank=k,
        low_rank_trace=low_rank,
        values=torch.tensor(values, dtype=torch.float64),
    )


def hutchinson_diagonal(
    matvec: Matvec,
    n: int,
    *,
    samples: int = 100,
    generator: torch.Generator | None = None,
    distribution: Probe = "rademacher",
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> DiagonalEstimate:
    """Stochastic estimate of the diagonal: diag(M) ≈ (1/s) Σᵢ zᵢ ⊙ M zᵢ.

    E[z ⊙ M z]ⱼ = Σₗ Mⱼₗ E[zⱼ zₗ] = Mⱼⱼ for probes with independent zero-mean unit-variance
    entries. With Rademacher probes the variance of entry j is Σ_{l≠j} Mⱼₗ² (zero for a
    diagonal M, where one probe is exact); Gaussian probes add 2 Mⱼⱼ².

    Args:
        matvec: symmetric ``v (n,) -> M v (n,)``.
        n: the dimension.
        samples: s ≥ 1 probes (= matvecs).
        generator: source of the probes.
        distribution: ``"rademacher"`` or ``"gaussian"``.
        dtype: dtype of the probes (the operator's); default dtype if None.
        device: their device; CPU if None.

    Returns:
        A :class:`DiagonalEstimate` (diagonal and standard errors in ``dtype`` on ``device``).

    Raises:
        ValueError: on bad arguments or a bad ``matvec`` output.

    Reference: Bekas, Kokiopoulou & Saad (2007), "An estimator for the diagonal of a matrix",
    Applied Numerical Mathematics 57(11-12).
    """
    where = "hutchinson_diagonal"
    n = _check_n(n, where)
    samples = _check_count(samples, "samples", where)
    if distribution not in ("rademacher", "gaussian"):
        raise ValueError(f"{where}: distribution must be 'rademacher' or 'gaussian', got {distribution!r}")
    dt, dev = _resolve(dtype, device, where)
    total = torch.zeros(n, dtype=torch.float64, device=dev)
    total_sq = torch.zeros(n, dtype=torch.float64, device=dev)
    for _ in range(samples):
        z = _random(n, distribution, generator, dt, dev)
        x = (z * _apply(matvec, z, where)).double()
        total += x
        total_sq += x * x
    mean = total / samples
    if samples > 1:
        var = ((total_sq - samples * mean * mean) / (samples - 1)).clamp_min(0.0)
        stderr = (var / samples).sqrt()
    else:
        stderr = torch.zeros_like(mean)
    return DiagonalEstimate(diagonal=mean.to(dt), stderr=stderr.to(dt), samples=samples)


# --------------------------------------------------------------------------- SLQ density


def _lanczos_quadrature(
    matvec: Matvec, start: Tensor, steps: int, breakdown_tol: float, where: str
) -> tuple[Tensor, Tensor]:
    """Nodes θ and weights τ = (first row of S)² of the m-step Gauss rule for (start, M, start).

    Full reorthogonalisation; stops early at an invariant subspace (the rule is then exact).
    """
    n = start.shape[0]
    basis = torch.empty(min(steps, n), n, dtype=start.dtype, device=start.device)
    basis[0] = start / start.norm()
    alphas: list[float] = []
    betas: list[float] = []
    for j in range(basis.shape[0]):
        qj = basis[j]
        w = _apply(matvec, qj, where)
        alpha = float(qj.dot(w))
        w = w - alpha * qj
        if j > 0:
            w = w - betas[j - 1] * basis[j - 1]
        w = _orthogonalise(w, basis[: j + 1])
        beta = float(w.norm())
        alphas.append(alpha)
        scale = max(max(abs(a) for a in alphas), max(betas, default=0.0), torch.finfo(start.dtype).tiny)
        if j + 1 == basis.shape[0] or beta <= breakdown_tol * scale:
            break
        betas.append(beta)
        basis[j + 1] = w / beta
    theta, vecs = torch.linalg.eigh(_tridiagonal(alphas, betas))
    return theta, vecs[0].square()


def spectral_density(
    matvec: Matvec,
    n: int,
    *,
    runs: int = 10,
    steps: int = 80,
    generator: torch.Generator | None = None,
    grid: Tensor | None = None,
    num_points: int = 1000,
    sigma: float | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> Density:
    """Eigenvalue density of a symmetric operator by stochastic Lanczos quadrature (SLQ).

    For a unit probe v = z / ‖z‖ (z Rademacher), vᵀ f(M) v = Σⱼ (uⱼᵀ v)² f(λⱼ) is a
    Riemann-Stieltjes integral against a measure whose m-point Gauss rule is given by m
    Lanczos steps from v: T_m = S diag(θ) Sᵀ, nodes θₖ, weights τₖ = S₁ₖ² (Golub & Meurant;
    Ubaru, Chen & Saad 2017, §3). Averaging R such rules estimates the spectral measure
    (1/n) Σⱼ δ(λⱼ), and a Gaussian kernel of width σ turns it into a density:

        φ(t) = (1/R) Σᵣ Σₖ τₖ⁽ʳ⁾ exp(−(t − θₖ⁽ʳ⁾)² / 2σ²) / (σ √(2π))

    so tr f(M) ≈ n ∫ f φ (see :meth:`Density.trace_of`). Costs R · m matvecs; the Lanczos
    runs use full reorthogonalisation, as in PyHessian (Yao et al. 2020).

    Args:
        matvec: symmetric ``v (n,) -> M v (n,)``.
        n: the dimension.
        runs: R, the number of probes.
        steps: m, the Lanczos steps per probe (at most n).
        generator: source of the probes.
        grid: points where φ is evaluated (1-D); by default ``num_points`` points evenly over
            [min θ − 5σ, max θ + 5σ].
        num_points: size of the default grid.
        sigma: kernel width; by default 1% of the spread of the nodes, max θ − min θ (or 1%
            of max |θ|, or 1, if the spread is zero).
        dtype: dtype of the probes (the operator's); default dtype if None.
        device: their device; CPU if None.

    Returns:
        A :class:`Density`; ``grid`` and ``density`` are float64 on the CPU.

    Raises:
        ValueError: on bad arguments or a bad ``matvec`` output.

    Reference: Ubaru, Chen & Saad (2017), SIAM J. Matrix Anal. Appl. 38(4);
    Ghorbani, Krishnan & Xiao (2019), ICML; Yao et al. (2020), PyHessian, §III-C.
    """
    where = "spectral_density"
    n = _check_n(n, where)
    runs = _check_count(runs, "runs", where)
    steps = min(_check_count(steps, "steps", where), n)
    num_points = _check_count(num_points, "num_points", where, minimum=2)
    if sigma is not None:
        sigma = _check_positive(sigma, "sigma", where)
    if grid is not None and (not isinstance(grid, Tensor) or grid.dim() != 1 or grid.numel() == 0):
        raise ValueError(f"{where}: grid must be a non-empty 1-D tensor")
    dt, dev = _resolve(dtype, device, where)
    breakdown_tol = 100.0 * torch.finfo(dt).eps

    nodes = torch.full((runs, steps), math.nan, dtype=torch.float64)
    weights = torch.zeros(runs, steps, dtype=torch.float64)
    for r in range(runs):
        theta, tau = _lanczos_quadrature(
            matvec, _random(n, "rademacher", generator, dt, dev), steps, breakdown_tol, where
        )
        nodes[r, : theta.numel()] = theta
        weights[r, : tau.numel()] = tau
    ok = weights > 0
    finite = nodes[~torch.isnan(nodes)]
    lo, hi = float(finite.min()), float(finite.max())
    if sigma is None:
        spread = hi - lo
        sigma = 0.01 * (spread if spread > 0 else (max(abs(lo), abs(hi)) or 1.0))
    t = (
        torch.linspace(lo - 5 * sigma, hi + 5 * sigma, num_points, dtype=torch.float64)
        if grid is None
        else grid.detach().to("cpu", torch.float64)
    )
    theta_ok, tau_ok = nodes[ok], weights[ok]
    kernel = torch.exp(-0.5 * ((t[:, None] - theta_ok[None, :]) / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi))
    density = kernel.mv(tau_ok) / runs
    return Density(grid=t, density=density, nodes=nodes, weights=weights, sigma=sigma, n=n)


# --------------------------------------------------------------------------- condition number


def condition_number(
    matvec: Matvec,
    n: int,
    *,
    max_iter: int | None = None,
    tol: float | None = None,
    generator: torch.Generator | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> ConditionNumber:
    """Estimate κ(M) = λ_max / λ_min of a symmetric positive (semi-)definite operator.

    Both extreme eigenvalues come from one :func:`lanczos` run (``which="both"``, k = 2). The
    largest converges fast; the smallest needs about √κ · log(1/tol) steps (Kaniel-Paige-Saad
    bounds, Golub & Van Loan 2013, §10.1.5), so for very ill-conditioned M raise
    ``max_iter``: an unconverged λ_min is an overestimate (a Ritz value lies inside the
    spectrum), making κ an *under*estimate. The result is ``inf`` when λ_min ≤ 0 (a singular
    or indefinite M, e.g. the Hessian away from a minimum).

    Args:
        matvec: symmetric ``v (n,) -> M v (n,)``, n ≥ 2.
        n: the dimension.
        max_iter: most Lanczos steps; min(n, 300) by default.
        tol: relative residual tolerance of :func:`lanczos`.
        generator: source of the start vector.
        dtype: dtype of the vectors given to ``matvec``; default dtype if None.
        device: their device; CPU if None.

    Returns:
        A :class:`ConditionNumber`.

    Raises:
        ValueError: on bad arguments (n < 2 included) or a bad ``matvec`` output.

    Reference: Golub & Van Loan (2013), §10.1.5.
    """
    where = "condition_number"
    n = _check_n(n, where)
    if n < 2:
        raise ValueError(f"{where}: n must be >= 2, got {n}")
    res = lanczos(
        matvec,
        n,
        k=2,
        which="both",
        max_iter=min(n, 300) if max_iter is None else max_iter,
        tol=tol,
        generator=generator,
        dtype=dtype,
        device=device,
    )
    smallest, largest = float(res.eigenvalues[0]), float(res.eigenvalues[1])
    kappa = largest / smallest if smallest > 0 else math.inf
    return ConditionNumber(kappa, largest, smallest, res.iterations, res.converged)
