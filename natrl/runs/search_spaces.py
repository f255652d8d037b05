"""The hyperparameter search spaces of ``natrl tune`` (:mod:`natrl.runs.tune`): rl-baselines3-zoo's samplers
(``rl_zoo3/hyperparams_opt.py``) in natrl's names, one per algorithm in :data:`SEARCH_SPACES`; NPG and ACKTR, which
the zoo does not have, get its TRPO and A2C choices with their own step size in place of TRPO's trust region and
A2C's optimiser."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna

__all__ = ["SEARCH_SPACES", "sample_a2c", "sample_acktr", "sample_npg", "sample_ppo", "sample_trpo"]


def _n_steps_pow(trial: optuna.Trial, total_steps: int, n_envs: int, *, low: int = 5, high: int = 12) -> int:
    """The zoo's 2^low to 2^high steps per env, capped so that one rollout fits the budget."""
    top = max(low, min(high, max(total_steps // max(n_envs, 1), 1).bit_length() - 1))  # floor(log2)
    return trial.suggest_int("n_steps_pow", low, top)


def sample_trpo(trial: optuna.Trial, *, k: int, n_envs: int, total_steps: int) -> dict[str, Any]:
    """rl-baselines3-zoo's ``sample_trpo_params`` (rl_zoo3/hyperparams_opt.py) in natrl's names.

    The zoo's choices: ``n_steps`` 8 to 2,048 (powers of two, capped so that one rollout fits the budget),
    ``batch_size`` 8 to 512 (at most ``n_steps``), γ in {0.9, 0.95, 0.98, 0.99, 0.995, 0.999, 0.9999}, λ in
    {0.8, 0.9, 0.92, 0.95, 0.98, 0.99, 1}, the critic's learning rate log-uniform in [1e-5, 1], 5 to 30 critic
    epochs and CG iterations, ``target_kl`` in {0.001, …, 0.1}, small or medium networks, tanh or ReLU, no
    orthogonal initialisation. sb3-contrib's ``target_kl`` bounds the KL averaged over the k action dimensions,
    natrl's ``max_kl`` the joint one (:mod:`natrl.rl.sb3_names`), so ``max_kl`` = k · ``target_kl``; the zoo's
    ``n_critic_updates``, ``cg_max_steps``, ``learning_rate`` and ``batch_size`` are natrl's ``critic_epochs``,
    ``cg_iters``, ``critic_lr`` and ``critic_batch_size``.

    Args:
        trial: the Optuna trial.
        k: the action dimensions of a Box action space (1 otherwise).
        n_envs: the preset's parallel envs.
        total_steps: the step budget.
    """
    n_steps = 2 ** _n_steps_pow(trial, total_steps, n_envs, low=3, high=11)
    batch_size = min(trial.suggest_categorical("batch_size", [8, 16, 32, 64, 128, 256, 512]), n_steps)
    gamma = trial.suggest_categorical("gamma", [0.9, 0.95, 0.98, 0.99, 0.995, 0.999, 0.9999])
    critic_lr = trial.suggest_float("critic_lr", 1e-5, 1.0, log=True)
    critic_epochs = trial.suggest_categorical("critic_epochs", [5, 10, 20, 25, 30])
    cg_iters = trial.suggest_categorical("cg_iters", [5, 10, 20, 25, 30])
    target_kl = trial.suggest_categorical("target_kl", [0.1, 0.05, 0.03, 0.02, 0.01, 0.005, 0.001])
    gae_lambda = trial.suggest_categorical("gae_lambda", [0.8, 0.9, 0.92, 0.95, 0.98, 0.99, 1.0])
    net_arch = trial.suggest_categorical("net_arch", ["small", "medium"])
    activation = trial.suggest_categorical("activation", ["tanh", "relu"])
    return {
        "n_steps": n_steps,
        "critic_batch_size": batch_size,
        "gamma": gamma,
        "gae_lambda": gae_lambda,
        "critic_lr": critic_lr,
        "critic_epochs": critic_epochs,
        "cg_iters": cg_iters,
        "max_kl": k * target_kl,
        "ortho_init": False,
        **_net(net_arch, activation),
    }


def sample_ppo(trial: optuna.Trial, *, k: int, n_envs: int, total_steps: int) -> dict[str, Any]:
    """rl-baselines3-zoo's ``sample_ppo_params`` (stable-baselines3 PPO's names are natrl PPO's); the minibatch
    from 32 (the zoo's comment's range), ``n_steps`` capped at the budget per env. ``k`` is unused."""
    del k
    n_steps = 2 ** _n_steps_pow(trial, total_steps, n_envs)
    batch_size = 2 ** trial.suggest_int("batch_size_pow", 5, 10)
    gamma = 1.0 - trial.suggest_float("one_minus_gamma", 1e-4, 0.03, log=True)
    gae_lambda = 1.0 - trial.suggest_float("one_minus_gae_lambda", 1e-4, 0.1, log=True)
    learning_rate = trial.suggest_float("learning_rate", 1e-5, 2e-3, log=True)
    ent_coef = trial.suggest_float("ent_coef", 1e-8, 0.1, log=True)
    clip_range = trial.suggest_categorical("clip_range", [0.1, 0.2, 0.3, 0.4])
    n_epochs = trial.suggest_categorical("n_epochs", [1, 5, 10, 20])
    max_grad_norm = trial.suggest_float("max_grad_norm", 0.3, 2.0)
    net_arch = trial.suggest_categorical("net_arch", ["tiny", "small", "medium"])
    activation = trial.suggest_categorical("activation", ["tanh", "relu"])
    return {
        "n_steps": n_steps,
        "batch_size": min(batch_size, n_steps * n_envs),
        "gamma": gamma,
        "gae_lambda": gae_lambda,
        "learning_rate": learning_rate,
        "ent_coef": ent_coef,
        "clip_range": clip_range,
        "n_epochs": n_epochs,
        "max_grad_norm": max_grad_norm,
        **_net(net_arch, activation),
    }


def sample_a2c(trial: optuna.Trial, *, k: int, n_envs: int, total_steps: int) -> dict[str, Any]:
    """rl-baselines3-zoo's ``sample_a2c_params`` (rl_zoo3/hyperparams_opt.py at DLR-RM/rl-baselines3-zoo
    d477a07, the sampler over SB3 A2C's own knobs, which later versions replaced by PPO's reduced space;
    stable-baselines3 A2C's names are natrl A2C's).

    The zoo's choices: γ in {0.9, 0.95, 0.98, 0.99, 0.995, 0.999, 0.9999}, λ in {0.8, 0.9, 0.92, 0.95, 0.98,
    0.99, 1}, ``n_steps`` 8 to 2,048 (powers of two, capped so that one rollout fits the budget), advantage
    normalisation on or off, ``max_grad_norm`` in {0.3, 0.5, 0.6, 0.7, 0.8, 0.9, 1, 2, 5}, RMSprop or Adam,
    the learning rate log-uniform in [1e-5, 1], constant or annealed linearly to 0 (the zoo's
    ``linear_schedule``, natrl's ``"lin_<value>"``), ``ent_coef`` log-uniform in [1e-8, 0.1], ``vf_coef``
    uniform in [0, 1] without 0 itself (natrl refuses a critic that never trains: the low end is 1e-8),
    orthogonal initialisation on or off, small or medium networks, tanh or ReLU. ``k`` is unused.
    """
    del k
    normalize_advantage = trial.suggest_categorical("normalize_advantage", [False, True])
    max_grad_norm = trial.suggest_categorical("max_grad_norm", [0.3, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 2.0, 5.0])
    use_rms_prop = trial.suggest_categorical("use_rms_prop", [False, True])
    vf_coef = trial.suggest_float("vf_coef", 1e-8, 1.0)
    return {
        **_actor_critic_choices(trial, total_steps, n_envs, lowest_learning_rate=1e-5),
        "vf_coef": vf_coef,
        "normalize_advantage": normalize_advantage,
        "max_grad_norm": max_grad_norm,
        "use_rms_prop": use_rms_prop,
    }


def sample_npg(trial: optuna.Trial, *, k: int, n_envs: int, total_steps: int) -> dict[str, Any]:
    """:func:`sample_trpo`'s choices for the natural policy gradient: NPG has no line search, so the zoo's
    ``target_kl`` (the KL per action dimension) sets ``step_size``, the KL of the normalised step, as k ·
    ``target_kl``; the rest (rollout, critic, CG iterations, networks) are TRPO's."""
    hp = sample_trpo(trial, k=k, n_envs=n_envs, total_steps=total_steps)
    hp["step_size"] = hp.pop("max_kl")
    return hp


def sample_acktr(trial: optuna.Trial, *, k: int, n_envs: int, total_steps: int) -> dict[str, Any]:
    """The zoo's A2C choices (:func:`sample_a2c`: γ, λ, ``n_steps``, ``ent_coef``, orthogonal initialisation,
    networks) with ACKTR's own step: the K-FAC learning rate log-uniform in [0.01, 1] (the ACKTR paper's 0.25
    inside), constant or annealed linearly to 0, and the trust region ``kl_clip`` in {0.0005, 0.001, 0.002, 0.005,
    0.01, 0.05} (the bound of the joint policy's KL: the paper's 0.001 for Atari, natrl's presets 0.001 on
    CartPole, 0.01 on MuJoCo, 0.05 on Pendulum); the critic's Adam steps as TRPO's sampler draws them (learning
    rate log-uniform in [1e-5, 1e-2], 5 to 30 epochs, minibatches of 8 to 512 steps). ``k`` is unused."""
    del k
    kl_clip = trial.suggest_categorical("kl_clip", [0.0005, 0.001, 0.002, 0.005, 0.01, 0.05])
    critic_lr = trial.suggest_float("critic_lr", 1e-5, 1e-2, log=True)
    critic_epochs = trial.suggest_categorical("critic_epochs", [5, 10, 20, 25, 30])
    batch_size = trial.suggest_categorical("batch_size", [8, 16, 32, 64, 128, 256, 512])
    hp = _actor_critic_choices(trial, total_steps, n_envs, lowest_learning_rate=0.01)
    return {
        **hp,
        "kl_clip": kl_clip,
        "critic_lr": critic_lr,
        "critic_epochs": critic_epochs,
        "critic_batch_size": min(batch_size, hp["n_steps"] * n_envs),
    }


def _actor_critic_choices(
    trial: optuna.Trial, total_steps: int, n_envs: int, *, lowest_learning_rate: float
) -> dict[str, Any]:
    """The zoo's A2C choices A2C and ACKTR share: γ, λ, ``n_steps`` 8 to 2,048, the learning rate log-uniform in
    [``lowest_learning_rate``, 1], constant or ``"lin_<value>"``, ``ent_coef``, orthogonal initialisation, small
    or medium networks, tanh or ReLU."""
    gamma = trial.suggest_categorical("gamma", [0.9, 0.95, 0.98, 0.99, 0.995, 0.999, 0.9999])
    gae_lambda = trial.suggest_categorical("gae_lambda", [0.8, 0.9, 0.92, 0.95, 0.98, 0.99, 1.0])
    n_steps = 2 ** _n_steps_pow(trial, total_steps, n_envs, low=3, high=11)
    lr_schedule = trial.suggest_categorical("lr_schedule", ["linear", "constant"])
    learning_rate = trial.suggest_float("learning_rate", lowest_learning_rate, 1.0, log=True)
    ent_coef = trial.suggest_float("ent_coef", 1e-8, 0.1, log=True)
    ortho_init = trial.suggest_categorical("ortho_init", [False, True])
    net_arch = trial.suggest_categorical("net_arch", ["small", "medium"])
    activation = trial.suggest_categorical("activation", ["tanh", "relu"])
    return {
        "n_steps": n_steps,
        "gamma": gamma,
        "gae_lambda": gae_lambda,
        "learning_rate": f"lin_{learning_rate!r}" if lr_schedule == "linear" else learning_rate,
        "ent_coef": ent_coef,
        "ortho_init": ortho_init,
        **_net(net_arch, activation),
    }


def _net(net_arch: str, activation: str) -> dict[str, Any]:
    sizes = {"tiny": [64], "small": [64, 64], "medium": [256, 256]}[net_arch]
    return {"hidden_sizes": sizes, "critic_hidden_sizes": None, "activation": activation}


SEARCH_SPACES: dict[str, Callable[..., dict[str, Any]]] = {
    "trpo": sample_trpo,
    "npg": sample_npg,
    "ppo": sample_ppo,
    "a2c": sample_a2c,
    "acktr": sample_acktr,
}
"""The search space of each algorithm: ``sample(trial, k=, n_envs=, total_steps=) -> natrl hyperparameters``."""
