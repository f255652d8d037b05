"""natrl presets translated to stable-baselines3 PPO and A2C, sb3-contrib TRPO and sb3-contrib RecurrentPPO.

The natrl preset is the source of truth. :func:`translate` maps a natrl config
to the peer's constructor arguments, its vector env and its normalisation, and
lists in notes every place where the two libraries cannot be made to do the
same thing (or where matching needs a non-obvious conversion). The translated
spec is JSON-serialisable and is written into the results file, so a reader can
audit the matching; :func:`build_model` materialises it.

Conversions that are not one-to-one (see the notes each spec carries):

* line search: natrl tries the full step plus ``line_search_max_backtracks``
  shrunk steps, sb3-contrib ``line_search_max_iter`` steps in all, so
  ``line_search_max_iter = line_search_max_backtracks + 1``;
* trust region of a Gaussian policy: sb3-contrib's TRPO measures KL with the per-dimension
  ``torch.distributions.Normal`` and averages it over the batch *and* the k action dimensions,
  where natrl (and tianshou) take the KL of the joint k-dimensional policy. Its KL and its
  KL-Hessian are natrl's divided by k, so ``target_kl = max_kl / k`` and
  ``cg_damping = damping / k`` take exactly natrl's steps (tests/test_bench.py compares one
  HalfCheetah update of both libraries parameter by parameter);
* Adam ε: natrl's critic Adam uses ε = 1e-8 (TRPO/NPG) and PPO's 1e-5; SB3's
  policies default to 1e-5, so ``optimizer_kwargs`` sets it explicitly;
* a linear trust region ``max_kl = "lin_<v>"``: sb3-contrib's ``target_kl`` is a plain float, so
  :func:`build_model` builds a subclass of its TRPO that sets ``target_kl`` from the schedule before
  every update, at the progress natrl uses (tests/test_bench.py compares the two per update);
* recurrent policies: natrl's PPO with ``"MlpLstmPolicy"`` is matched by sb3-contrib's
  ``RecurrentPPO`` with the same LSTM width and layers; sb3-contrib has no recurrent TRPO and no GRU
  policy, so those jobs run without a peer;
* small images: natrl's extractor for images under 36×36 pixels (MinAtar's 10×10 frames) is
  :class:`~natrl.rl.policies.MinAtarCNN`, SB3's ``CnnPolicy`` has only ``NatureCNN``, which cannot take
  them: the spec names natrl's class as SB3's ``features_extractor_class`` (a string in the spec,
  :data:`MINATAR_CNN`, resolved among natrl's classes by :func:`build_model`).
"""

from __future__ import annotations

import copy
import inspect
from dataclasses import asdict, dataclass
from typing import Any

from natrl.schedules import linear_start

__all__ = ["MINATAR_CNN", "PEER_NAMES", "PPO_ADAM_EPS", "PeerSpec", "build_model", "translate"]

PEER_NAMES = {
    "trpo": "sb3-contrib TRPO",
    "ppo": "SB3 PPO",
    "a2c": "SB3 A2C",
    "RecurrentPPO": "sb3-contrib RecurrentPPO",
}
_CLASSES = {"trpo": "sb3_contrib.TRPO", "ppo": "stable_baselines3.PPO", "a2c": "stable_baselines3.A2C"}
_ACTIVATIONS = {"tanh": "Tanh", "relu": "ReLU", "elu": "ELU", "gelu": "GELU"}
# natrl.rl.ppo builds its Adam with eps=1e-5 (tests/test_bench.py checks it stays so).
PPO_ADAM_EPS = 1e-5
MINATAR_CNN = "natrl.rl.policies.extractors:MinAtarCNN"
"""The SB3 peer's ``features_extractor_class`` where natrl's default image extractor is MinAtarCNN."""


@dataclass(frozen=True)
class PeerSpec:
    """A stable-baselines3 model matched to a natrl config.

    Attributes:
        algo_class: "sb3_contrib.TRPO", "stable_baselines3.PPO" or "stable_baselines3.A2C".
        kwargs: constructor keyword arguments, JSON-serialisable: ``activation_fn``
            is a ``torch.nn`` class name and a linear learning-rate schedule is
            ``{"linear": initial_rate}``.
        n_envs: training environments (``make_vec_env`` with ``DummyVecEnv``).
        vec_normalize: ``VecNormalize`` keyword arguments, or None without normalisation.
        notes: differences that remain, and conversions that are not one-to-one.
        policy: the policy name SB3 is given (None: ``CnnPolicy`` for image observations, else ``MlpPolicy``).
    """

    algo_class: str
    kwargs: dict[str, Any]
    n_envs: int
    vec_normalize: dict[str, Any] | None
    notes: tuple[str, ...]
    policy: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["notes"] = list(self.notes)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PeerSpec:
        return cls(
            algo_class=data["algo_class"],
            kwargs=data["kwargs"],
            n_envs=int(data["n_envs"]),
            vec_normalize=data["vec_normalize"],
            notes=tuple(data["notes"]),
            policy=data.get("policy"),
        )


def _default(func: Any, name: str) -> Any:
    return inspect.signature(func).parameters[name].default


def _schedule(value: Any) -> Any:
    """A natrl hyperparameter as the peer spec holds it: a number, or ``{"linear": v}`` for ``"lin_<v>"``."""
    start = linear_start(value)
    if start is not None:
        return {"linear": start}
    if callable(value):
        raise ValueError("natrl bench cannot translate a function schedule for the SB3 peer; use 'lin_<value>'")
    return value


def _per_dimension(value: float, k: int) -> float:
    """value / k to 12 significant digits: rl-zoo3's 0.1 from a preset's 0.3 on 3 actions, not 0.09999999999999999."""
    return float(f"{value / k:.12g}")


def translate(
    algo: str,
    config: Any,
    policy: str | None = None,
    policy_kwargs: dict[str, Any] | None = None,
    *,
    action_dims: int | None = 1,
    observation_space: Any = None,
) -> PeerSpec | None:
    """The stable-baselines3 peer of a natrl config, or None when there is none (NPG, ACKTR, a recurrent TRPO or
    A2C, a GRU).

    Args:
        algo: natrl algorithm name.
        config: its ``TRPOConfig`` / ``PPOConfig`` / ``A2CConfig``.
        policy: the preset's policy name (None: natrl's default).
        policy_kwargs: the preset's policy keywords (the recurrent layer's size).
        action_dims: k, the dimensions of a Box action space (1 for discrete actions; None when
            unknown): sb3-contrib's TRPO averages the Gaussian KL over them (module docstring).
        observation_space: the (wrapped) env's observation space, when known: images get natrl's
            extractor (MinAtarCNN for small ones).
    """
    from natrl.rl.policies.build import RECURRENT_POLICIES

    if algo not in _CLASSES:
        return None
    recurrent = policy in RECURRENT_POLICIES
    if recurrent and (algo != "ppo" or RECURRENT_POLICIES[policy] != "lstm"):  # type: ignore[index]
        return None
    from natrl.rl.a2c import ADAM_EPS as a2c_adam_eps
    from natrl.rl.critic import adam
    from natrl.rl.normalization import ObsNormalizer, RewardScaler

    cfg = config
    notes: list[str] = []
    adam_eps = float(_default(adam, "eps")) if algo == "trpo" else PPO_ADAM_EPS
    sb3_policy_kwargs: dict[str, Any] = {
        "net_arch": {"pi": list(cfg.hidden_sizes), "vf": list(cfg.critic_hidden_sizes or cfg.hidden_sizes)},
        "activation_fn": _ACTIVATIONS[cfg.activation],
        "ortho_init": bool(cfg.ortho_init),
        "log_std_init": float(cfg.log_std_init),
        "optimizer_kwargs": {"eps": adam_eps},
    }
    common: dict[str, Any] = {
        "n_steps": cfg.n_steps,
        "gamma": cfg.gamma,
        "gae_lambda": cfg.gae_lambda,
        "normalize_advantage": bool(cfg.normalize_advantage),
    }
    if algo == "trpo":
        sub = 1 if cfg.fisher_subsample >= 1.0 else max(1, round(1.0 / cfg.fisher_subsample))
        max_kl = _schedule(cfg.max_kl)  # a number, or {"linear": v} for "lin_<v>"
        k = action_dims or 1
        if isinstance(max_kl, dict):
            target_kl: float | dict[str, float] = {"linear": _per_dimension(max_kl["linear"], k)}
        else:
            target_kl = _per_dimension(max_kl, k)
        kwargs = {
            "learning_rate": _schedule(cfg.critic_lr),
            **common,
            "batch_size": cfg.critic_batch_size,
            "cg_max_steps": cfg.cg_iters,
            "cg_damping": _per_dimension(cfg.damping, k),
            "line_search_shrinking_factor": cfg.line_search_shrink,
            "line_search_max_iter": cfg.line_search_max_backtracks + 1,
            "n_critic_updates": cfg.critic_epochs,
            "target_kl": target_kl,
            "sub_sampling_factor": sub,
        }
        notes += [
            f"line_search_max_iter={cfg.line_search_max_backtracks + 1}: natrl tries the full step and "
            f"{cfg.line_search_max_backtracks} shrunk steps (line_search_max_backtracks), sb3-contrib "
            "counts all trials",
            "trust region: natrl bounds mean KL(π_old‖π_new) ≤ max_kl, sb3-contrib mean KL(π_new‖π_old) "
            "< target_kl (equal to second order)",
        ]
        if isinstance(target_kl, dict):
            notes.append(
                f"max_kl={cfg.max_kl!r} (linear to 0 over the run): sb3-contrib's target_kl is a plain number, read "
                "at every update; the peer is a subclass of its TRPO that sets target_kl = "
                f"{target_kl['linear']:g} × progress_remaining before each update, as natrl evaluates the schedule "
                "(progress after the rollout, as SB3 counts it)"
            )
        if k > 1:
            start = target_kl["linear"] if isinstance(target_kl, dict) else target_kl
            notes.append(
                f"KL per action dimension: sb3-contrib averages the Gaussian KL over the {k} action dimensions, "
                f"natrl takes the joint policy's KL: target_kl = max_kl/{k} = {start:g}"
                f"{' (at the start)' if isinstance(target_kl, dict) else ''} and "
                f"cg_damping = damping/{k} = {kwargs['cg_damping']:g} give the same steps"
            )
        if action_dims is None:
            notes.append("APPROXIMATE: the action space was not read; target_kl and cg_damping assume one dimension")
        notes += [
            f"CG stop: natrl ‖r‖ ≤ cg_tol·‖g‖ (cg_tol={cfg.cg_tol:g}), sb3-contrib ‖r‖² < 1e-10 (fixed); "
            "both at most cg_iters iterations",
            f"critic: Adam lr={cfg.critic_lr}, eps={adam_eps:g} (set through optimizer_kwargs; SB3's "
            "default is 1e-5), natrl's loss is ½·MSE, SB3's MSE (Adam is invariant to the scale)",
        ]
        if cfg.adaptive_damping:
            notes.append("NOT MATCHED: adaptive_damping (Levenberg–Marquardt); sb3-contrib keeps cg_damping constant")
        if cfg.line_search_accept_ratio > 0:
            notes.append(
                f"NOT MATCHED: line_search_accept_ratio={cfg.line_search_accept_ratio:g}; sb3-contrib accepts "
                "any surrogate improvement"
            )
        if cfg.fisher_subsample < 1.0:
            notes.append(
                f"APPROXIMATE: fisher_subsample={cfg.fisher_subsample:g} → sub_sampling_factor={sub}; "
                "sb3-contrib subsamples gradient, Fisher and line search, natrl only the Fisher"
            )
    elif algo == "a2c":
        kwargs = {
            "learning_rate": _schedule(cfg.learning_rate),
            **common,
            "ent_coef": cfg.ent_coef,
            "vf_coef": cfg.vf_coef,
            "max_grad_norm": cfg.max_grad_norm,
            "rms_prop_eps": cfg.rms_prop_eps,
            "use_rms_prop": bool(cfg.use_rms_prop),
        }
        if cfg.use_rms_prop:
            # SB3's A2C builds its RMSprop (alpha 0.99, eps rms_prop_eps) in place of any optimizer_kwargs
            del sb3_policy_kwargs["optimizer_kwargs"]
        else:
            sb3_policy_kwargs["optimizer_kwargs"] = {"eps": a2c_adam_eps}
    else:
        lr: float | dict[str, float] = _schedule(cfg.learning_rate)
        if cfg.anneal_lr and not isinstance(lr, dict):
            lr = {"linear": lr}
        kwargs = {
            "learning_rate": lr,
            **common,
            "batch_size": cfg.batch_size,
            "n_epochs": cfg.n_epochs,
            "clip_range": _schedule(cfg.clip_range),
            "clip_range_vf": cfg.clip_range_vf,
            "ent_coef": cfg.ent_coef,
            "vf_coef": cfg.vf_coef,
            "max_grad_norm": cfg.max_grad_norm,
            "target_kl": cfg.target_kl,
        }
    notes += _image_extractor(observation_space, policy_kwargs or {}, sb3_policy_kwargs)
    kwargs["policy_kwargs"] = sb3_policy_kwargs
    algo_class = _CLASSES[algo]
    if recurrent:
        algo_class = "sb3_contrib.RecurrentPPO"
        extra = dict(policy_kwargs or {})
        policy_kwargs_rec: dict[str, Any] = {k: extra[k] for k in ("lstm_hidden_size", "n_lstm_layers") if k in extra}
        sb3_policy_kwargs.update({"lstm_hidden_size": 256, "n_lstm_layers": 1, **policy_kwargs_rec})
        sb3_policy_kwargs.update(shared_lstm=False, enable_critic_lstm=True)
        if extra.get("lstm_forget_bias"):
            notes.append(
                f"APPROXIMATE: natrl adds lstm_forget_bias={extra['lstm_forget_bias']:g} to its LSTMs' forget-gate "
                "biases; RecurrentPPO has no such option and keeps torch's initialisation"
            )
        L = cfg.sequence_steps()
        notes.append(
            f"sequences: natrl cuts each env's rollout into sequences of {L} steps (state zeroed at episode "
            "starts inside them) and draws minibatches of whole sequences; RecurrentPPO splits it at episode "
            "starts, pads, and draws minibatches of contiguous steps"
        )
    normalize = None
    if cfg.normalize_obs or cfg.normalize_reward:
        obs_clip, obs_eps = _default(ObsNormalizer, "clip"), _default(ObsNormalizer, "epsilon")
        rew_clip, rew_eps = _default(RewardScaler, "clip"), _default(RewardScaler, "epsilon")
        if obs_eps != rew_eps:
            notes.append(
                f"APPROXIMATE: VecNormalize has one epsilon; natrl uses {obs_eps:g} (obs), {rew_eps:g} (reward)"
            )
        normalize = {
            "norm_obs": bool(cfg.normalize_obs),
            "norm_reward": bool(cfg.normalize_reward),
            "gamma": cfg.gamma,
            "clip_obs": float(obs_clip),
            "clip_reward": float(rew_clip),
            "epsilon": float(obs_eps),
        }
        if cfg.normalize_obs and cfg.obs_norm_update != "step":
            notes.append(
                "observation statistics: natrl updates them once per rollout (frozen within it), "
                "VecNormalize after every step (including reset observations)"
            )
        notes.append("evaluation applies the training VecNormalize's observation statistics (frozen), raw rewards")
    if getattr(cfg, "state_dependent_std", False):
        notes.append("NOT MATCHED: state_dependent_std (SB3 has a state-dependent std only as gSDE)")
    if cfg.action_bound != "clip":
        notes.append(f"NOT MATCHED: action_bound={cfg.action_bound!r}; SB3 clips Gaussian actions to the bounds")
    if cfg.vec_env not in ("sync", "mujoco"):  # "mujoco" steps the same envs bit for bit, in one process
        notes.append(f"NOT MATCHED: vec_env={cfg.vec_env!r}; the SB3 run steps its envs in one process (DummyVecEnv)")
    return PeerSpec(algo_class, kwargs, int(cfg.n_envs), normalize, tuple(notes), policy if recurrent else None)


def _image_extractor(space: Any, natrl_kwargs: dict[str, Any], sb3_kwargs: dict[str, Any]) -> list[str]:
    """For image observations: name natrl's extractor in ``sb3_kwargs`` where SB3's default differs (MinAtarCNN
    for images under 36×36 pixels, where SB3 would build NatureCNN), and the note on the extractor. Its
    initialisation matches: with ``ortho_init`` both libraries make its Linear and Conv2d weights orthogonal
    (gain √2, biases 0)."""
    from natrl.rl.policies import MinAtarCNN
    from natrl.rl.policies.extractors import image_extractor_class
    from natrl.rl.spaces import is_image_space

    if space is None or not is_image_space(space) or "features_extractor_class" in natrl_kwargs:
        return []
    notes = []
    if image_extractor_class(space) is MinAtarCNN:
        features_dim = int(_default(MinAtarCNN, "features_dim"))
        sb3_kwargs["features_extractor_class"] = MINATAR_CNN
        sb3_kwargs["features_extractor_kwargs"] = {"features_dim": features_dim}
        notes.append(
            f"features extractor: natrl's MinAtarCNN (Young & Tian's 16×3×3 convolution and {features_dim} "
            f"ReLU units, natrl's default for images under 36×36 pixels) as SB3's features_extractor_class; "
            "SB3's CnnPolicy default, NatureCNN, cannot take these images"
        )
    return notes


def _with_linear_target_kl(model_cls: Any, initial: float) -> Any:
    """sb3-contrib's TRPO with ``target_kl = initial · progress_remaining`` at every update.

    sb3-contrib reads ``self.target_kl`` (a plain float) in ``train``; SB3 evaluates its own schedules there at
    ``_current_progress_remaining``, the progress after the rollout just collected, which is where natrl
    evaluates ``max_kl = "lin_<v>"`` too (clamped at 0 for the last rollout's overshoot, as natrl does).
    """

    class LinearTargetKL(model_cls):
        def train(self) -> None:
            self.target_kl = initial * max(0.0, float(self._current_progress_remaining))
            super().train()

    LinearTargetKL.__name__ = LinearTargetKL.__qualname__ = f"{model_cls.__name__}LinearTargetKL"
    return LinearTargetKL


def build_model(
    spec: PeerSpec,
    env_id: str,
    seed: int,
    env_kwargs: dict[str, Any] | None = None,
    wrapper_class: Any = None,
    device: str = "cpu",
) -> tuple[Any, Any]:
    """Build the SB3 model and its training vector env (the preset's make-kwargs and wrapper on every copy;
    ``CnnPolicy`` for image observations, as SB3 wants it named) on ``device``.

    Returns:
        (model, vec_normalize): ``vec_normalize`` is the ``VecNormalize`` wrapper, or None.

    Raises:
        ModuleNotFoundError: stable-baselines3 or sb3-contrib is not installed.
    """
    import torch
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.utils import LinearSchedule
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    module_name, class_name = spec.algo_class.rsplit(".", 1)
    module = __import__(module_name, fromlist=[class_name])
    model_cls = getattr(module, class_name)
    kwargs = copy.deepcopy(spec.kwargs)
    pk = kwargs["policy_kwargs"] = dict(kwargs.get("policy_kwargs", {}))
    pk["activation_fn"] = getattr(torch.nn, pk["activation_fn"])
    if isinstance(pk.get("features_extractor_class"), str):
        from natrl.rl.trusted import resolve_class

        pk["features_extractor_class"] = resolve_class(
            pk["features_extractor_class"],
            torch.nn.Module,
            field="the peer spec's features_extractor_class",
            hint="give SB3 the class yourself",
        )
    for key in ("learning_rate", "clip_range"):
        value = kwargs.get(key)
        if isinstance(value, dict):
            kwargs[key] = LinearSchedule(float(value["linear"]), 0.0, 1.0)
    if isinstance(kwargs.get("target_kl"), dict):  # TRPO with natrl's max_kl "lin_<v>"
        kwargs["target_kl"] = float(kwargs["target_kl"]["linear"])
        model_cls = _with_linear_target_kl(model_cls, kwargs["target_kl"])
    from natrl.rl.env import register_env_id

    env_id = register_env_id(env_id)  # e.g. ale-py's ALE/ ids, which gymnasium knows only once registered
    venv = make_vec_env(env_id, n_envs=spec.n_envs, seed=seed, vec_env_cls=DummyVecEnv, env_kwargs=env_kwargs,
                        wrapper_class=wrapper_class)  # fmt: skip
    vec_normalize = None
    if spec.vec_normalize is not None:
        venv = vec_normalize = VecNormalize(venv, **spec.vec_normalize)
    from stable_baselines3.common.preprocessing import is_image_space

    policy = spec.policy or ("CnnPolicy" if is_image_space(venv.observation_space) else "MlpPolicy")
    model = model_cls(policy, venv, seed=seed, device=device, verbose=0, **kwargs)
    return model, vec_normalize
