"""Do natrl's hand-written speed devices earn their code? End-to-end steps/s, one device at a time.

For TRPO and PPO with their presets (agents/<algo>.toml) on CartPole-v1, Pendulum-v1 and Hopper-v5, each
device of :mod:`natrl.rl.accel` and :mod:`natrl.rl.critic` is measured three ways, the others left as they
are: (a) the hand-written device, (b) the generic path as it is, (c) the generic path made fast with public
tools (``torch.compile`` of the loss or of the rollout forward, ``torch.func`` transforms, the public
fused/foreach Adam step, ``torch.nn.utils.clip_grad_norm_(foreach=True)``). Throughput is training steps
per second of process CPU time (``time.process_time``, one torch thread) over updates 2..K+1 of a run (the
first update, which includes any compilation, is excluded from the rate and reported as compile time).
Variants are interleaved (A B C A B C …) and the median of the repetitions is reported.

    OMP_NUM_THREADS=1 python scripts/speed_devices.py --reps 3 --out docs/bench/speed-devices.json
    python scripts/speed_devices.py --table docs/bench/speed-devices.json   # the Markdown table

The variants are installed by replacing module attributes in this process only (a measurement harness);
the library's own choice is made once at setup in :func:`natrl.rl.accel.fast_paths`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import tomllib
import torch

ROOT = Path(__file__).resolve().parent.parent
ENVS = ("CartPole-v1", "Pendulum-v1", "Hopper-v5")
META = {"total_steps", "expected_return", "env_kwargs", "wrapper", "policy", "policy_kwargs"}

# device -> (hand-written variant, generic variant, public-tools variants)
DEVICES: dict[str, dict[str, tuple[str, ...]]] = {
    "trpo": {
        "sampler": ("hand", "sampler:generic", ("sampler:compile",)),
        "critic_grads": ("hand", "critic:generic", ("critic:compile",)),
        "fisher_vp": ("hand", "fisher:generic", ("fisher:func", "fisher:func+compile")),
        "adam_step": ("hand", "adam:step", ("adam:foreach",)),
    },
    "ppo": {
        "sampler": ("hand", "sampler:generic", ("sampler:compile",)),
        "ppo_grads": ("hand", "ppo:generic", ("ppo:compile",)),
        "adam_step": ("hand", "adam:step", ("adam:foreach",)),
        "clip_grad_norm": ("hand", "clip:torch", ("clip:torch",)),
    },
}


# devices that called private torch APIs (torch._fused_adam_, torch._foreach_*): replaced by the public calls
# whatever they measured (no private API in natrl)
PRIVATE = ("adam_step", "clip_grad_norm")
# devices measured at commit a7f0ae0 (docs/bench/speed-devices.json) and gone since: the private ones, and the
# hand-written Fisher-vector product (within 10% of the generic path); `git checkout a7f0ae0` to measure them again
GONE = ("fisher_vp", *PRIVATE)


def variants(algo: str) -> list[str]:
    out = ["hand"]
    for device, (_, generic, public) in DEVICES[algo].items():
        if device in GONE:
            continue
        for v in (generic, *public):
            if v not in out:
                out.append(v)
    return out


def preset(algo: str, env_id: str) -> dict[str, Any]:
    data = tomllib.loads((ROOT / "agents" / f"{algo}.toml").read_text())
    table = dict(data.get("default", {}))
    table.update(data.get(env_id, {}))
    return {k: v for k, v in table.items() if k not in META}


# --------------------------------------------------------------------------- public-tools variants


def compiled_sampler(actor: Any, generator: torch.Generator) -> Callable:
    """The generic sampler with the actor's forward compiled (the sample itself stays eager: it draws from a
    torch.Generator, which dynamo does not trace)."""
    fwd = torch.compile(actor.forward, fullgraph=True, dynamic=False)

    @torch.no_grad()
    def sample(obs: Any) -> Any:
        return actor.dist_cls(*fwd(torch.from_numpy(obs))).sample(generator).numpy()

    return sample


def compiled_value_grads(critic: Any) -> Callable:
    """The generic critic gradient with its loss compiled (AOTAutograd compiles the backward too)."""
    params = list(critic.parameters())

    def loss_fn(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return 0.5 * (critic(x) - y).pow(2).mean()

    loss_c = torch.compile(loss_fn, fullgraph=True, dynamic=False)

    def grads(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        loss = loss_c(x, y)
        for p in params:
            p.grad = None
        loss.backward()
        return loss.detach()

    return grads


def compiled_ppo_grads(actor: Any, critic: Any) -> Callable:
    """PPO's autograd loss (natrl.rl.ppo.PPO._autograd_grads' arithmetic) compiled; backward by AOTAutograd."""
    from natrl.rl.accel import PPOTerms
    from natrl.rl.critic import unique_parameters
    from natrl.rl.policies.modules import distribution_and_value

    params = unique_parameters(actor, critic)

    def loss_fn(obs, actions, old_lp, adv, returns, old_values, clip_range, clip_range_vf, ent_coef, vf_coef):
        dist, values = distribution_and_value(actor, critic, obs)
        log_ratio = dist.log_prob(actions) - old_lp
        ratio = log_ratio.exp()
        surr1 = ratio * adv
        surr2 = ratio.clamp(1 - clip_range, 1 + clip_range) * adv
        pg_loss = -torch.min(surr1, surr2).mean()
        if clip_range_vf is not None:
            values = old_values + (values - old_values).clamp(-clip_range_vf, clip_range_vf)
        v_loss = (values - returns).pow(2).mean()
        entropy = dist.entropy().mean()
        loss = pg_loss + vf_coef * v_loss - ent_coef * entropy
        with torch.no_grad():
            approx_kl = ((ratio - 1) - log_ratio).mean()
            clip_frac = ((ratio - 1).abs() > clip_range).float().mean()
        return loss, pg_loss.detach(), v_loss.detach(), entropy.detach(), approx_kl, clip_frac

    loss_c = torch.compile(loss_fn, fullgraph=True, dynamic=False)

    def grads(mb: Any, coefs: Any) -> tuple[Any, Callable[[], None]]:
        loss, *terms = loss_c(*mb[:6], *coefs)

        def backward() -> None:
            for p in params:
                p.grad = None
            loss.backward()

        return PPOTerms(*terms), backward

    return grads


# --------------------------------------------------------------------------- installing a variant


def install(variant: str) -> Callable[[], None]:
    """Replace the module attributes for ``variant``; returns the function that restores them."""
    import natrl.rl.agent as agent_mod
    from natrl.rl import accel

    saved: list[tuple[Any, str, Any]] = []

    def patch(mod: Any, name: str, value: Any) -> None:
        saved.append((mod, name, getattr(mod, name)))
        setattr(mod, name, value)

    def restore() -> None:
        for mod, name, value in reversed(saved):
            setattr(mod, name, value)

    if variant == "hand":
        return restore
    device, how = variant.split(":")
    if device in ("sampler", "critic", "ppo"):
        flag = {"sampler": "sampler", "critic": "critic_grads", "ppo": "ppo_grads"}[device]

        def chosen(actor: Any, critic: Any, rng: Any, *, enabled: bool = True) -> Any:
            paths = accel.fast_paths(actor, critic, rng, enabled=enabled, **{flag: False})
            if how == "generic":
                return paths
            if device == "sampler":
                gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
                return dataclasses.replace(paths, sampler=compiled_sampler(actor, gen))
            if device == "critic":
                return dataclasses.replace(paths, critic_grads=compiled_value_grads(critic))
            return dataclasses.replace(paths, ppo_grads=compiled_ppo_grads(actor, critic))

        patch(agent_mod, "fast_paths", chosen)
    else:
        raise ValueError(f"unknown variant {variant!r}")
    return restore


def run_once(algo: str, env_id: str, variant: str, updates: int) -> dict[str, Any]:
    import natrl

    hp = preset(algo, env_id)
    restore = install(variant)
    try:
        agent = getattr(natrl, algo.upper())("MlpPolicy", env_id, seed=0, **hp)
        per_update = agent.config.n_envs * agent.config.n_steps
        marks: list[tuple[float, float]] = []

        def cb(_agent: Any, _stats: Any) -> bool:
            marks.append((time.process_time(), time.perf_counter()))
            return True

        t0 = (time.process_time(), time.perf_counter())
        agent.learn(per_update * (updates + 1), callback=cb)
        agent.close()
    except Exception as e:  # a compile variant that fails on the CPU: its error line goes into the table
        restore()
        return {"variant": variant, "error": f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"}
    restore()
    cpu = marks[-1][0] - marks[0][0]
    return {
        "variant": variant,
        "steps_per_s": per_update * (len(marks) - 1) / cpu,
        "first_update_wall_s": marks[0][1] - t0[1],
        "steady_update_wall_s": (marks[-1][1] - marks[0][1]) / (len(marks) - 1),
    }


def worker(algo: str, env_id: str, reps: int, updates: int, only: list[str] | None) -> None:
    torch.set_num_threads(1)
    names = only or variants(algo)
    if updates <= 0:  # enough updates for about 1.5 s of the hand-written variant's CPU time, at least 5
        probe = run_once(algo, env_id, "hand", 3)
        per_update_s = probe["steady_update_wall_s"]
        updates = max(5, min(60, int(1.5 / per_update_s) + 1))
    for rep in range(reps):
        for v in names:
            r = run_once(algo, env_id, v, updates)
            r.update(algo=algo, env=env_id, rep=rep, updates=updates)
            print(json.dumps(r), flush=True)


# --------------------------------------------------------------------------- table


def summarise(rows: list[dict[str, Any]]) -> dict[tuple[str, str, str], dict[str, Any]]:
    out: dict[tuple[str, str, str], dict[str, Any]] = {}
    for r in rows:
        key = (r["algo"], r["env"], r["variant"])
        d = out.setdefault(key, {"rates": [], "first": [], "steady": [], "error": None})
        if "error" in r:
            d["error"] = r["error"]
        else:
            d["rates"].append(r["steps_per_s"])
            d["first"].append(r["first_update_wall_s"])
            d["steady"].append(r["steady_update_wall_s"])
    for d in out.values():
        d["median"] = statistics.median(d["rates"]) if d["rates"] else None
    return out


def paired_ratio(
    s: dict[tuple[str, str, str], dict[str, Any]], algo: str, env_id: str, hand: str, others: tuple[str, ...]
) -> float | None:
    """Median over repetitions of hand / best other, each repetition's variants run back to back (the
    pairing cancels most of a shared machine's drift); the best other is the one with the highest median."""
    meds = [(s[(algo, env_id, v)]["median"], v) for v in others if s.get((algo, env_id, v), {}).get("median")]
    h = s.get((algo, env_id, hand), {})
    if not meds or not h.get("rates"):
        return None
    best = s[(algo, env_id, max(meds)[1])]["rates"]
    return statistics.median(a / b for a, b in zip(h["rates"], best))


def table(data: dict[str, Any]) -> str:
    s = summarise(data["rows"])
    lines = [
        "| algo | device | env | hand-written | generic | public tools | hand / best other (paired) | compile (s) |",
        "|---|---|---|---:|---:|---|---:|---:|",
    ]
    for algo, devices in DEVICES.items():
        for dev, (hand, generic, public) in devices.items():
            for env_id in data["envs"]:
                h = s.get((algo, env_id, hand), {}).get("median")
                g = s.get((algo, env_id, generic), {}).get("median")
                pub = []
                comp = []
                for p in public:
                    d = s.get((algo, env_id, p))
                    if d is None:
                        continue
                    if d["median"] is None:
                        pub.append(f"{p}: failed ({d['error']})")
                    else:
                        pub.append(f"{p}: {d['median']:,.0f}")
                        if "compile" in p and d["first"]:
                            compile_s = d["first"][0] - statistics.median(d["steady"])
                            comp.append(f"{compile_s:.1f}")
                r = paired_ratio(s, algo, env_id, hand, (generic, *public))
                ratio = f"{r:.2f}" if r else "—"
                hs = f"{h:,.0f}" if h else "—"
                gs = f"{g:,.0f}" if g else "—"
                lines.append(
                    f"| {algo} | {dev} | {env_id} | {hs} | {gs} | {'; '.join(pub) or '—'} | {ratio} | "
                    f"{', '.join(comp) or '—'} |"
                )
    lines += ["", "| algo | device | best ratio hand / best other (env) | decision |", "|---|---|---|---|"]
    for algo, devices in DEVICES.items():
        for dev, (hand, generic, public) in devices.items():
            best: tuple[float, str] | None = None
            for env_id in data["envs"]:
                r = paired_ratio(s, algo, env_id, hand, (generic, *public))
                if r and (best is None or r > best[0]):
                    best = (r, env_id)
            if best is None:
                continue
            if dev in PRIVATE:
                decision = "replaced by the public call (a private torch API)"
            else:
                decision = "kept (>= 10% on one env)" if best[0] >= 1.10 else "removed (< 10% on every env)"
            lines.append(f"| {algo} | {dev} | {best[0]:.2f} ({best[1]}) | {decision} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument(
        "--updates", type=int, default=0, help="measured updates per run after one warm-up (0: ~1.5 s worth, >= 5)"
    )
    ap.add_argument("--algos", nargs="+", default=list(DEVICES))
    ap.add_argument("--envs", nargs="+", default=list(ENVS))
    ap.add_argument("--variants", nargs="+", help="only these variants (default: all of the algorithm's)")
    ap.add_argument("--jobs", type=int, default=1, help="(algo, env) workers run at once")
    ap.add_argument("--out", help="write the raw rows and metadata as JSON")
    ap.add_argument("--table", help="print the Markdown table of a JSON written by --out")
    ap.add_argument("--worker", nargs=2, metavar=("ALGO", "ENV"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.table:
        print(table(json.loads(Path(args.table).read_text())))
        return 0
    if args.worker:
        worker(*args.worker, args.reps, args.updates, args.variants)
        return 0
    path = os.pathsep.join(x for x in (str(ROOT), os.environ.get("PYTHONPATH", "")) if x)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path}
    pending = [(a, e) for a in args.algos for e in args.envs]
    running: list[subprocess.Popen] = []
    rows: list[dict[str, Any]] = []
    start = time.perf_counter()

    def drain(p: subprocess.Popen) -> None:
        out, _ = p.communicate()
        for line in out.splitlines():
            if line.startswith("{"):
                rows.append(json.loads(line))
                print(line, flush=True)

    while pending or running:
        while pending and len(running) < args.jobs:
            a, e = pending.pop(0)
            cmd = [sys.executable, __file__, "--worker", a, e, "--reps", str(args.reps), "--updates", str(args.updates)]
            if args.variants:
                cmd += ["--variants", *args.variants]
            running.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT))
        done = [p for p in running if p.poll() is not None]
        for p in done:
            drain(p)
            running.remove(p)
        time.sleep(0.5)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    data = {
        "commit": commit.stdout.strip(),
        "command": " ".join(["python", "scripts/speed_devices.py", *sys.argv[1:]]),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
        "wall_s": time.perf_counter() - start,
        "envs": args.envs,
        "rows": rows,
    }
    if args.out:
        Path(args.out).write_text(json.dumps(data, indent=1) + "\n")
    print(table(data))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
