"""natrl presets translated to tianshou 2.x TRPO, NPG and PPO.

The second peer of ``natrl bench`` (``--against sb3,tianshou``), built the way
tianshou's own MuJoCo examples build their agents: ``Net`` trunks,
``ContinuousActorProbabilistic`` (a state-independent log-std) or
``DiscreteActor``, a separate critic, ``ProbabilisticActorPolicy`` clipping
actions to the bounds, ``VectorEnvNormObs`` for observation normalisation, a
``Collector`` over a ``DummyVectorEnv`` and the on-policy trainer
(``OnPolicyTrainer``), which collects ``n_envs × n_steps`` steps, updates on the
whole buffer and resets it.

As for stable-baselines3 (:mod:`natrl.bench.peers`), the natrl preset is the source
of truth and every place where tianshou cannot do the same thing is a note in the
spec, written into the results. The differences that matter most:

* tianshou's TRPO/NPG fix CG at 10 iterations and the damping at 0.1;
* its critic takes ``optim_critic_iters`` Adam steps on the same minibatch as the
  policy step. With one natural step per update (``batch_size=None``: the whole
  rollout) natrl's ``critic_epochs`` epochs of ``critic_batch_size`` minibatches
  become ``critic_epochs`` full-batch steps;
* its NPG takes the fixed step ``trust_region_size · F⁻¹g``, natrl's NPG a step
  normalised to a quadratic-model KL of ``step_size``: there is no translation, so
  the peer uses tianshou's MuJoCo example value (0.1);
* ``return_scaling`` (tianshou) divides returns by a running std of returns, natrl's
  ``normalize_reward`` the rewards by the std of the discounted return.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import asdict, dataclass
from typing import Any

from natrl.schedules import linear_start

__all__ = ["TIANSHOU_NAMES", "TianshouSpec", "build_tianshou", "translate_tianshou"]

TIANSHOU_NAMES = {"trpo": "tianshou TRPO", "npg": "tianshou NPG", "ppo": "tianshou PPO"}
_ACTIVATIONS = {"tanh": "Tanh", "relu": "ReLU", "elu": "ELU", "gelu": "GELU"}
# tianshou's MuJoCo NPG example (examples/mujoco/mujoco_npg.py) steps by 0.1 · F⁻¹g
NPG_TRUST_REGION_SIZE = 0.1
# fixed inside tianshou's NPG/TRPO (not constructor arguments)
_TIANSHOU_CG_ITERS, _TIANSHOU_DAMPING = 10, 0.1


@dataclass(frozen=True)
class TianshouSpec:
    """A tianshou algorithm matched to a natrl config (JSON-serialisable).

    Attributes:
        algo: "TRPO", "NPG" or "PPO" (a class of ``tianshou.algorithm``).
        algo_kwargs: the algorithm's keyword arguments other than policy, critic and optimiser.
        lr: Adam's learning rate (the critic's for TRPO/NPG, actor and critic together for PPO),
            or ``{"linear": lr}`` for a linear decay to zero over the run.
        adam_eps: Adam's ε.
        n_envs: training environments (``DummyVectorEnv``).
        collect_steps: environment steps per update (``n_envs × n_steps``).
        batch_size: the trainer's minibatch size (None: the whole buffer).
        repeat: passes over the buffer per update (``update_step_num_repetitions``).
        hidden_sizes / critic_hidden_sizes: the ``Net`` trunks.
        activation: a ``torch.nn`` class name.
        ortho_init: orthogonal init (gain √2, policy head 0.01, value head 1, zero biases).
        log_std_init: the initial log standard deviation (continuous actions).
        obs_norm: observations normalised by ``VectorEnvNormObs`` (statistics frozen for evaluation).
        notes: differences that remain, and conversions that are not one-to-one.
    """

    algo: str
    algo_kwargs: dict[str, Any]
    lr: float | dict[str, float]
    adam_eps: float
    n_envs: int
    collect_steps: int
    batch_size: int | None
    repeat: int
    hidden_sizes: list[int]
    critic_hidden_sizes: list[int]
    activation: str
    ortho_init: bool
    log_std_init: float
    obs_norm: bool
    notes: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["notes"] = list(self.notes)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TianshouSpec:
        return cls(**{**data, "notes": tuple(data["notes"])})


def _constant(name: str, value: Any, notes: list[str]) -> float:
    """A natrl hyperparameter as a number; a ``lin_<v>`` schedule keeps its start value (noted)."""
    start = linear_start(value)
    if start is not None:
        notes.append(f"NOT MATCHED: {name}={value}: tianshou keeps it constant at {start:g}")
        return start
    if callable(value):
        raise ValueError(f"natrl bench cannot translate a function schedule of {name} for tianshou; use 'lin_<value>'")
    return float(value)


def translate_tianshou(
    algo: str, config: Any, policy: str | None = None, policy_kwargs: dict[str, Any] | None = None
) -> TianshouSpec | None:
    """The tianshou peer of a natrl config, or None when there is none (ACKTR, recurrent policies).

    Args:
        algo: natrl algorithm name.
        config: its ``TRPOConfig`` / ``NPGConfig`` / ``PPOConfig``.
        policy: the preset's policy name (None: natrl's default MLP).
        policy_kwargs: the preset's policy keywords (unused: tianshou gets MLP trunks only).
    """
    from natrl.rl.policies.build import RECURRENT_POLICIES

    if algo not in TIANSHOU_NAMES or policy in RECURRENT_POLICIES:
        return None
    from natrl.rl.critic import adam

    cfg = config
    notes: list[str] = []
    common = {
        "gamma": cfg.gamma,
        "gae_lambda": cfg.gae_lambda,
        "advantage_normalization": bool(cfg.normalize_advantage),
        "return_scaling": bool(cfg.normalize_reward),
    }
    if cfg.normalize_reward:
        notes.append(
            "reward: natrl divides rewards by the running std of the discounted return; tianshou's "
            "return_scaling divides the GAE returns by a running std of returns"
        )
    if algo in ("trpo", "npg"):
        kwargs: dict[str, Any] = {**common, "optim_critic_iters": int(cfg.critic_epochs)}
        steps = cfg.n_envs * cfg.n_steps
        minibatches = max(1, math.ceil(steps / cfg.critic_batch_size))
        if minibatches > 1:
            notes.append(
                f"critic: natrl takes {cfg.critic_epochs} epochs of minibatches of {cfg.critic_batch_size} "
                f"({cfg.critic_epochs * minibatches} Adam steps); tianshou {cfg.critic_epochs} full-batch steps "
                "(optim_critic_iters on the minibatch of the policy step, here the whole rollout)"
            )
        if cfg.cg_iters != _TIANSHOU_CG_ITERS:
            notes.append(f"NOT MATCHED: cg_iters={cfg.cg_iters}; tianshou fixes CG at {_TIANSHOU_CG_ITERS} iterations")
        if cfg.damping != _TIANSHOU_DAMPING or getattr(cfg, "adaptive_damping", False):
            notes.append(f"NOT MATCHED: damping={cfg.damping:g}; tianshou fixes it at {_TIANSHOU_DAMPING:g}")
        if algo == "trpo":
            kwargs.update(
                max_kl=_constant("max_kl", cfg.max_kl, notes),
                backtrack_coeff=cfg.line_search_shrink,
                max_backtracks=cfg.line_search_max_backtracks,
            )
            notes.append(
                "trust region: natrl bounds mean KL(π_old‖π_new) ≤ max_kl, tianshou KL(π_old‖π_new) < max_kl "
                "and requires a lower surrogate loss"
            )
        else:
            kwargs["trust_region_size"] = NPG_TRUST_REGION_SIZE
            notes.append(
                f"NOT MATCHED: natrl's NPG step is normalised to a quadratic-model KL of step_size={cfg.step_size}; "
                f"tianshou steps trust_region_size·F⁻¹g with a fixed trust_region_size={NPG_TRUST_REGION_SIZE:g} "
                "(its MuJoCo example's value)"
            )
        lr: float | dict[str, float] = _constant("critic_lr", cfg.critic_lr, notes)
        eps, batch_size, repeat = float(_default(adam, "eps")), None, 1
    else:
        kwargs = {
            **common,
            "eps_clip": _constant("clip_range", cfg.clip_range, notes),
            "value_clip": cfg.clip_range_vf is not None,
            "vf_coef": cfg.vf_coef,
            "ent_coef": cfg.ent_coef,
            "max_grad_norm": cfg.max_grad_norm,
        }
        if cfg.clip_range_vf is not None:
            notes.append(f"APPROXIMATE: clip_range_vf={cfg.clip_range_vf}: tianshou clips values at eps_clip")
        if cfg.target_kl is not None:
            notes.append(f"NOT MATCHED: target_kl={cfg.target_kl}: tianshou's PPO has no early stop")
        rate = cfg.learning_rate
        start = linear_start(rate)
        if start is not None:
            lr = {"linear": start}
        else:
            lr = {"linear": float(rate)} if cfg.anneal_lr else _constant("learning_rate", rate, notes)
        from natrl.bench.peers import PPO_ADAM_EPS

        eps, batch_size, repeat = PPO_ADAM_EPS, int(cfg.batch_size), int(cfg.n_epochs)
    if cfg.normalize_obs:
        notes.append(
            "observations: tianshou's VectorEnvNormObs updates its statistics after every step and clips at 10; "
            "evaluation applies the training statistics (frozen)"
        )
    if getattr(cfg, "state_dependent_std", False):
        notes.append("NOT MATCHED: state_dependent_std (tianshou's actor here has a state-independent std)")
    if cfg.action_bound != "clip":
        notes.append(f"NOT MATCHED: action_bound={cfg.action_bound!r}; tianshou clips actions to the bounds")
    hidden = [int(h) for h in cfg.hidden_sizes]
    return TianshouSpec(
        algo=algo.upper(),
        algo_kwargs=kwargs,
        lr=lr,
        adam_eps=eps,
        n_envs=int(cfg.n_envs),
        collect_steps=int(cfg.n_envs * cfg.n_steps),
        batch_size=batch_size,
        repeat=repeat,
        hidden_sizes=hidden,
        critic_hidden_sizes=[int(h) for h in (cfg.critic_hidden_sizes or hidden)],
        activation=_ACTIVATIONS[cfg.activation],
        ortho_init=bool(cfg.ortho_init),
        log_std_init=float(cfg.log_std_init),
        obs_norm=bool(cfg.normalize_obs),
        notes=tuple(notes),
    )


def _default(func: Any, name: str) -> Any:
    return inspect.signature(func).parameters[name].default


@dataclass
class TianshouRun:
    """A built tianshou agent: train with :meth:`learn`, act with :meth:`predict`."""

    algorithm: Any
    collector: Any
    train_envs: Any
    spec: TianshouSpec
    total_steps: int
    continuous: bool

    def learn(self, on_update: Any = None) -> int:
        """Train for ``total_steps`` with tianshou's on-policy trainer; ``on_update(env_step)`` runs before
        every collection (after the previous update). Returns the environment steps collected."""
        from tianshou.trainer import OnPolicyTrainerParams

        updates = math.ceil(self.total_steps / self.spec.collect_steps)
        self.algorithm.run_training(
            OnPolicyTrainerParams(
                training_collector=self.collector,
                test_collector=None,
                max_epochs=1,
                epoch_num_steps=updates * self.spec.collect_steps,
                collection_step_num_env_steps=self.spec.collect_steps,
                batch_size=self.spec.batch_size,
                update_step_num_repetitions=self.spec.repeat,
                training_fn=(lambda epoch, env_step: on_update(env_step)) if on_update else None,
                test_in_training=False,
                verbose=False,
                show_progress=False,
            )
        )
        return int(self.collector.collect_step)

    def predict(self, obs: Any, state: Any = None) -> tuple[Any, Any]:
        """The deterministic action for one raw observation (normalised with the frozen training statistics)."""
        import numpy as np

        if self.spec.obs_norm:
            obs = self.train_envs.get_obs_rms().norm(np.asarray(obs, dtype=np.float64))
        import torch
        from tianshou.utils.torch_utils import policy_within_training_step, torch_train_mode

        policy = self.algorithm.policy
        # the mode of the distribution: outside a training step, eval mode (the trainer restores both)
        with torch.no_grad(), policy_within_training_step(policy, enabled=False), torch_train_mode(policy, False):
            action = policy.compute_action(np.asarray(obs, dtype=np.float32))
        if self.continuous:  # compute_action squeezes an action of shape (1,) to a scalar
            action = np.asarray(action).reshape(policy.action_space.shape)
        return action, state

    def close(self) -> None:
        self.train_envs.close()


def build_tianshou(
    spec: TianshouSpec,
    env_id: str,
    seed: int,
    total_steps: int,
    env_kwargs: dict[str, Any] | None = None,
    wrapper_class: Any = None,
) -> TianshouRun:
    """Build the tianshou algorithm, its training envs and collector (CPU, flat observations).

    Raises:
        ModuleNotFoundError: tianshou is not installed.
        ValueError: an observation or action space tianshou's MLP actors do not take here.
    """
    import gymnasium as gym
    import numpy as np
    import torch
    from tianshou.algorithm import NPG, PPO, TRPO
    from tianshou.algorithm.modelfree.reinforce import ProbabilisticActorPolicy
    from tianshou.algorithm.optim import AdamOptimizerFactory, LRSchedulerFactoryLinear
    from tianshou.data import Collector, CollectStats, VectorReplayBuffer
    from tianshou.env import DummyVectorEnv, VectorEnvNormObs
    from tianshou.utils.net.common import Net
    from tianshou.utils.net.continuous import ContinuousActorProbabilistic, ContinuousCritic
    from tianshou.utils.net.discrete import DiscreteActor, DiscreteCritic
    from torch.distributions import Categorical, Independent, Normal

    from natrl.rl.env import env_factory

    factory = env_factory(env_id, env_kwargs, wrapper_class)
    probe = factory()
    obs_space, act_space = probe.observation_space, probe.action_space
    probe.close()
    if not (isinstance(obs_space, gym.spaces.Box) and len(obs_space.shape) == 1):
        raise ValueError(f"the tianshou peer takes flat Box observations; {env_id} has {obs_space}")
    if not isinstance(act_space, (gym.spaces.Box, gym.spaces.Discrete)):
        raise ValueError(f"the tianshou peer takes Box or Discrete actions; {env_id} has {act_space}")
    np.random.seed(seed)  # noqa: NPY002 - tianshou shuffles minibatches with NumPy's global generator
    torch.manual_seed(seed)
    train_envs: Any = DummyVectorEnv([factory for _ in range(spec.n_envs)])
    train_envs.seed(seed)
    if spec.obs_norm:
        train_envs = VectorEnvNormObs(train_envs)

    activation = getattr(torch.nn, spec.activation)
    obs_dim = obs_space.shape

    def trunk(sizes: list[int]) -> Any:
        return Net(state_shape=obs_dim, hidden_sizes=sizes, activation=activation)

    continuous = isinstance(act_space, gym.spaces.Box)
    if isinstance(act_space, gym.spaces.Box):
        actor: Any = ContinuousActorProbabilistic(
            preprocess_net=trunk(spec.hidden_sizes), action_shape=act_space.shape, unbounded=True
        )
        critic: Any = ContinuousCritic(preprocess_net=trunk(spec.critic_hidden_sizes))
        torch.nn.init.constant_(actor.sigma_param, spec.log_std_init)
        head = actor.mu
    else:
        actor = DiscreteActor(preprocess_net=trunk(spec.hidden_sizes), action_shape=int(act_space.n),
                              softmax_output=False)  # fmt: skip
        critic = DiscreteCritic(preprocess_net=trunk(spec.critic_hidden_sizes))
        head = actor.last
    if spec.ortho_init:
        for module, gain in ((actor, math.sqrt(2)), (critic, math.sqrt(2)), (head, 0.01), (critic.last, 1.0)):
            for m in module.modules():
                if isinstance(m, torch.nn.Linear):
                    torch.nn.init.orthogonal_(m.weight, gain=gain)
                    torch.nn.init.zeros_(m.bias)

    def dist(logits: Any) -> Any:
        if continuous:
            loc, scale = logits
            return Independent(Normal(loc, scale), 1)
        return Categorical(logits=logits)

    policy = ProbabilisticActorPolicy(
        actor=actor,
        dist_fn=dist,
        deterministic_eval=True,
        action_space=act_space,
        action_scaling=False,
        action_bound_method="clip" if continuous else None,
    )
    lr = spec.lr["linear"] if isinstance(spec.lr, dict) else spec.lr
    optim = AdamOptimizerFactory(lr=float(lr), eps=spec.adam_eps)
    if isinstance(spec.lr, dict):
        steps = math.ceil(total_steps / spec.collect_steps) * spec.collect_steps
        optim.with_lr_scheduler_factory(
            LRSchedulerFactoryLinear(
                max_epochs=1, epoch_num_steps=steps, collection_step_num_env_steps=spec.collect_steps
            )
        )
    cls = {"TRPO": TRPO, "NPG": NPG, "PPO": PPO}[spec.algo]
    algorithm = cls(policy=policy, critic=critic, optim=optim, **spec.algo_kwargs)
    buffer = VectorReplayBuffer(spec.collect_steps, spec.n_envs)
    collector = Collector[CollectStats](algorithm, train_envs, buffer, exploration_noise=True)
    collector.reset()
    return TianshouRun(algorithm, collector, train_envs, spec, int(total_steps), continuous)
