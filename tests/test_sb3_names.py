"""sb3-contrib's TRPO names translated into natrl's, checked both ways and against sb3-contrib's own update."""

from __future__ import annotations

import pytest
import torch

from natrl import PPO, TRPO
from natrl.bench.peers import translate
from natrl.rl import TRPOConfig
from natrl.rl.sb3_names import natrl_field, translate_sb3_names

_SB3_TRPO = ("target_kl", "cg_damping", "cg_max_steps", "n_critic_updates", "batch_size", "learning_rate",
             "line_search_shrinking_factor", "line_search_max_iter")  # fmt: skip


@pytest.mark.parametrize(("env_id", "k"), [("CartPole-v1", 1), ("Pendulum-v1", 1), ("HalfCheetah-v5", 6)])
def test_the_inverse_of_the_bench_translation_gives_back_natrls_config(env_id: str, k: int) -> None:
    cfg = TRPOConfig(max_kl=0.03 * k, damping=0.2 * k, cg_iters=17, critic_epochs=7, critic_batch_size=96,
                     critic_lr=3e-4, line_search_shrink=0.7, line_search_max_backtracks=12)  # fmt: skip
    spec = translate("trpo", cfg, action_dims=k)
    assert spec is not None
    sb3_kwargs = {name: spec.kwargs[name] for name in _SB3_TRPO}
    agent = TRPO("MlpPolicy", env_id, **sb3_kwargs)
    for field in ("max_kl", "damping", "cg_iters", "critic_epochs", "critic_batch_size", "critic_lr",
                  "line_search_shrink", "line_search_max_backtracks"):  # fmt: skip
        assert getattr(agent.config, field) == pytest.approx(getattr(cfg, field), rel=1e-12), field
    assert len(agent.sb3_translations) == len(_SB3_TRPO)
    partial = TRPO("MlpPolicy", env_id, n_critic_updates=5)  # the rest at sb3-contrib's defaults, not natrl's
    assert partial.config.max_kl == pytest.approx(0.01 * k) and partial.config.damping == pytest.approx(0.1 * k)
    assert partial.config.line_search_max_backtracks == 9
    partial.close()
    agent.close()


def test_names_without_an_exact_translation_or_given_twice_are_refused() -> None:
    with pytest.raises(ValueError, match="sub_sampling_factor=2"):
        TRPO("Pendulum-v1", sub_sampling_factor=2)
    with pytest.raises(ValueError, match="target_kl and max_kl"):
        TRPO("Pendulum-v1", target_kl=0.01, max_kl=0.01)
    with pytest.raises(ValueError, match="use_sde=True has no natrl equivalent"):
        PPO("Pendulum-v1", use_sde=True)
    with pytest.raises(ValueError, match="line_search_max_iter"):
        TRPO("Pendulum-v1", line_search_max_iter=0)
    assert translate_sb3_names("ppo", {"use_sde": False, "stats_window_size": 100}, 1) == ({}, [])


def test_sb3_contrib_zoo_hyperparameters_take_sb3_contribs_first_step_on_hopper() -> None:
    """rl-baselines3-zoo's Hopper TRPO hyperparameters given to both libraries by sb3-contrib's names: from the
    same weights on the same rollout, one policy step moves every parameter alike."""
    pytest.importorskip("mujoco")
    sb3_contrib = pytest.importorskip("sb3_contrib")
    from stable_baselines3.common.env_util import make_vec_env
    from trpo_first_step import policy_steps

    zoo = {"batch_size": 128, "n_steps": 256, "gamma": 0.99, "gae_lambda": 0.95, "sub_sampling_factor": 1,
           "cg_max_steps": 25, "cg_damping": 0.1, "n_critic_updates": 20, "learning_rate": 1e-3}  # fmt: skip
    model = sb3_contrib.TRPO("MlpPolicy", make_vec_env("Hopper-v5", n_envs=2, seed=0), seed=0, **zoo)
    agent = TRPO("MlpPolicy", "Hopper-v5", n_envs=2, seed=0, **zoo)
    assert agent.config.max_kl == pytest.approx(0.03) and agent.config.damping == pytest.approx(0.3)  # k = 3
    ours, theirs, before = policy_steps(model, agent, zoo["n_steps"])
    assert float((ours - before).abs().max()) > 1e-3  # a real step, so the comparison can fail
    # equal to float32 round-off over 25 CG iterations (the steps are ~1e-2; a k-fold trust region differs by ~1e-2)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)
    agent.close()
    model.get_env().close()


def test_renamed_fields_hold_sb3_contribs_attribute_values_and_load_translates_them(tmp_path) -> None:
    """``natrl_field`` maps sb3-contrib TRPO's attribute names onto natrl's config: the model built with the same
    sb3-contrib hyperparameters holds sb3-contrib's attribute values there; ``load``'s custom_objects translate
    the names alike (target_kl × k), leaving every saved value not named as it was (no sb3-contrib defaults)."""
    sb3_contrib = pytest.importorskip("sb3_contrib")
    given = {"cg_max_steps": 11, "n_critic_updates": 4, "batch_size": 32, "learning_rate": 5e-4,
             "line_search_shrinking_factor": 0.6}  # fmt: skip
    ours = TRPO("MlpPolicy", "HalfCheetah-v5", n_steps=64, **given)
    theirs = sb3_contrib.TRPO("MlpPolicy", "HalfCheetah-v5", n_steps=64, **given)
    fields = set(ours.config.to_dict())
    for name in given:
        target = natrl_field(name, fields)
        assert target is not None and target != name
        assert getattr(ours.config, target) == getattr(theirs, name), name
    assert natrl_field("gamma", fields) == "gamma" and natrl_field("clip_range", fields) is None
    saved = TRPO("HalfCheetah-v5", n_steps=64, max_kl=0.12, damping=0.5, line_search_max_backtracks=4)
    path = saved.save(tmp_path / "t")
    loaded = TRPO.load(path, custom_objects={"target_kl": 0.01, "learning_rate": 2e-4, "clip_range": 0.1})
    expected = {**saved.config.to_dict(), "max_kl": pytest.approx(0.06), "critic_lr": 2e-4}
    assert loaded.config.to_dict() == expected
    for model in (ours, saved, loaded):
        model.close()
