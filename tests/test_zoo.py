"""rl-baselines3-zoo hyperparameter files as natrl presets (natrl/cli/zoo.py, ``natrl train --hyperparams``).

The snippets copy the zoo's format (hyperparams/trpo.yml and hyperparams/ppo.yml: ``!!float`` tags, anchors and
``<<:`` merges, ``policy_kwargs`` and ``normalize`` strings, ``lin_`` schedules) with values of their own. The
translated configs are compared with natrl's own translation of the same SB3 names (the agent constructor's) and
with values worked out by hand; a file that names code runs nothing.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from torch import nn

from natrl import PPO, TRPO
from natrl.cli import main
from natrl.cli.zoo import ZooError, parse_python_literal, zoo_preset
from natrl.rl.config import build_config
from natrl.runs import RunSpec

TRPO_YML = """\
default:
  n_timesteps: !!float 1e6
  policy: 'MlpPolicy'

CartPole-v1:
  n_envs: 2
  n_timesteps: !!float 4e4
  policy: 'MlpPolicy'
  n_steps: 256
  batch_size: 256
  cg_damping: !!float 2e-3
  gae_lambda: 0.97
  gamma: 0.98
  learning_rate: lin_2e-3
  n_critic_updates: 12

HalfCheetahBulletEnv-v0: &pybullet-defaults
  normalize: true
  n_envs: 2
  n_timesteps: !!float 2e6
  policy: 'MlpPolicy'
  batch_size: 64
  n_steps: 512
  gamma: 0.995
  gae_lambda: 0.9
  sub_sampling_factor: 1
  cg_max_steps: 20
  cg_damping: 0.05
  n_critic_updates: 15
  learning_rate: !!float 5e-4

Hopper-v5:
  <<: *pybullet-defaults
  n_timesteps: !!float 3e5
  target_kl: 0.02
  line_search_max_iter: 6
  policy_kwargs: "dict(log_std_init=-1.5,
                       ortho_init=False,
                       activation_fn=nn.ReLU,
                       net_arch=dict(pi=[128, 128], vf=[256, 256])
                       )"
"""

PPO_YML = """\
CartPole-v1:
  n_envs: 4
  n_timesteps: !!float 5e4
  policy: 'MlpPolicy'
  n_steps: 64
  batch_size: 128
  gae_lambda: 0.85
  gamma: 0.97
  n_epochs: 5
  ent_coef: 0.001
  learning_rate: lin_0.0005
  clip_range: lin_0.25

Pendulum-v1:
  normalize: "{'norm_obs': True, 'norm_reward': False}"
  n_envs: 2
  n_timesteps: !!float 3e4
  policy: 'MlpPolicy'
  n_steps: 512
  gae_lambda: 0.92
  gamma: 0.93
  n_epochs: 8
  learning_rate: !!float 7e-4
  clip_range: 0.3
  max_grad_norm: 0.7
  vf_coef: 0.4
  use_sde: False
  policy_kwargs: "dict(log_std_init=-0.5, ortho_init=False, activation_fn=th.nn.Tanh, net_arch=[32, 32])"
"""


@pytest.fixture
def files(tmp_path: Path) -> Path:
    (tmp_path / "trpo.yml").write_text(TRPO_YML)
    (tmp_path / "ppo.yml").write_text(PPO_YML)
    return tmp_path


def _agent(cls: type, path: Path, env: str) -> tuple:
    """The agent natrl train builds from the file (its config over natrl's defaults, not natrl's preset)."""
    preset, notes = zoo_preset(path, cls.algo, env, cls.config_cls)
    config = build_config(cls.config_cls, preset.hyperparameters)
    agent = cls(env, config=config, policy=preset.policy, policy_kwargs=preset.policy_kwargs,
                env_kwargs=preset.env_kwargs)  # fmt: skip
    return agent, preset, notes


def test_trpo_hopper_table_is_sb3_contrib_trpo_with_the_kl_scaled_by_the_action_dimensions(files: Path) -> None:
    agent, preset, notes = _agent(TRPO, files / "trpo.yml", "Hopper-v5")
    try:
        cfg = agent.config
        assert preset.table == "Hopper-v5" and preset.total_steps == 300_000 and preset.expected_return is None
        # k = 3 action dimensions: target_kl 0.02 → 0.06, cg_damping 0.05 → 0.15 (the anchor's value)
        assert cfg.max_kl == pytest.approx(0.06) and cfg.damping == pytest.approx(0.15)
        assert (cfg.n_envs, cfg.n_steps, cfg.gamma, cfg.gae_lambda) == (2, 512, 0.995, 0.9)
        assert (cfg.critic_batch_size, cfg.cg_iters, cfg.critic_epochs, cfg.critic_lr) == (64, 20, 15, 5e-4)
        assert cfg.line_search_max_backtracks == 5  # line_search_max_iter 6: the full step and 5 shrunk ones
        assert cfg.normalize_obs and cfg.normalize_reward and cfg.obs_norm_update == "step"  # VecNormalize's
        assert cfg.hidden_sizes == (128, 128) and cfg.critic_hidden_sizes == (256, 256)
        assert (cfg.activation, cfg.ortho_init, cfg.log_std_init) == ("relu", False, -1.5)
        assert any("target_kl=0.02 → max_kl=0.06" in n for n in notes)
        # the same SB3 names given to natrl's constructor translate to the same config
        sb3 = dict(batch_size=64, cg_max_steps=20, cg_damping=0.05, n_critic_updates=15, learning_rate=5e-4,
                   target_kl=0.02, line_search_max_iter=6, sub_sampling_factor=1)  # fmt: skip
        natrl_own = {k: v for k, v in preset.hyperparameters.items() if k in ("n_envs", "n_steps", "gamma",
                     "gae_lambda", "normalize_obs", "normalize_reward", "obs_norm_update", "hidden_sizes",
                     "critic_hidden_sizes", "activation", "ortho_init", "log_std_init")}  # fmt: skip
        direct = TRPO("MlpPolicy", "Hopper-v5", **natrl_own, **sb3)
        assert direct.config == cfg
        direct.close()
        linears = [m for m in agent.actor.modules() if isinstance(m, nn.Linear)]
        assert [m.out_features for m in linears] == [128, 128, 3]
        assert any(isinstance(m, nn.ReLU) for m in agent.actor.modules())
    finally:
        agent.close()


def test_trpo_tables_the_file_leaves_short_take_sb3_contribs_defaults(files: Path) -> None:
    agent, preset, _ = _agent(TRPO, files / "trpo.yml", "CartPole-v1")
    try:
        cfg = agent.config
        assert cfg.max_kl == 0.01 and cfg.damping == pytest.approx(2e-3)  # discrete actions: k = 1
        assert cfg.critic_lr == "lin_2e-3" and cfg.critic_epochs == 12 and cfg.critic_batch_size == 256
        assert cfg.line_search_max_backtracks == 9  # sb3-contrib's line_search_max_iter 10
        assert not cfg.normalize_obs and cfg.hidden_sizes == (64, 64)
    finally:
        agent.close()
    # no table of its own: the zoo's 'default'
    preset, _ = zoo_preset(files / "trpo.yml", "trpo", "Acrobot-v1", TRPO.config_cls)
    assert preset.table == "default" and preset.total_steps == 1_000_000


def test_ppo_cartpole_and_pendulum_tables(files: Path) -> None:
    agent, preset, notes = _agent(PPO, files / "ppo.yml", "CartPole-v1")
    try:
        cfg = agent.config
        assert preset.total_steps == 50_000 and notes == []  # PPO's names are natrl's
        assert (cfg.n_envs, cfg.n_steps, cfg.batch_size, cfg.n_epochs) == (4, 64, 128, 5)
        assert (cfg.gamma, cfg.gae_lambda, cfg.ent_coef) == (0.97, 0.85, 0.001)
        assert cfg.learning_rate == "lin_0.0005" and cfg.clip_range == "lin_0.25" and not cfg.anneal_lr
        assert not cfg.normalize_obs and not cfg.normalize_reward
    finally:
        agent.close()
    agent, preset, _ = _agent(PPO, files / "ppo.yml", "Pendulum-v1")
    try:
        cfg = agent.config
        assert cfg.normalize_obs and not cfg.normalize_reward and cfg.obs_norm_update == "step"
        assert (cfg.n_envs, cfg.n_steps, cfg.n_epochs, cfg.learning_rate, cfg.clip_range) == (2, 512, 8, 7e-4, 0.3)
        assert (cfg.max_grad_norm, cfg.vf_coef, cfg.gamma, cfg.gae_lambda) == (0.7, 0.4, 0.93, 0.92)
        assert (cfg.hidden_sizes, cfg.activation, cfg.ortho_init, cfg.log_std_init) == ((32, 32), "tanh", False, -0.5)
        assert float(agent.actor.log_std.detach()[0]) == -0.5
    finally:
        agent.close()


PPO_LSTM_YML = """\
CartPoleNoVel-v1:
  n_envs: 4
  n_timesteps: !!float 6e4
  policy: 'MlpLstmPolicy'
  n_steps: 16
  batch_size: 64
  gae_lambda: 0.85
  gamma: 0.97
  n_epochs: 3
  policy_kwargs: "dict(ortho_init=False, activation_fn=nn.ReLU, lstm_hidden_size=24, n_lstm_layers=2,
                       enable_critic_lstm=True, net_arch=dict(pi=[16], vf=[16]))"
"""


def test_the_zoos_ppo_lstm_file_is_recurrent_ppo_read_as_natrl_ppo(tmp_path: Path) -> None:
    """hyperparams/ppo_lstm.yml (sb3-contrib RecurrentPPO's file): the LSTM policy and its keywords carry over."""
    path = tmp_path / "ppo_lstm.yml"
    path.write_text(PPO_LSTM_YML)
    agent, preset, notes = _agent(PPO, path, "CartPoleNoVel-v1")
    try:
        cfg = agent.config
        assert preset.policy == "MlpLstmPolicy" and preset.total_steps == 60_000 and notes == []
        assert preset.policy_kwargs == {"lstm_hidden_size": 24, "n_lstm_layers": 2, "enable_critic_lstm": True}
        assert (cfg.n_envs, cfg.n_steps, cfg.batch_size, cfg.n_epochs, cfg.gamma) == (4, 16, 64, 3, 0.97)
        assert (cfg.hidden_sizes, cfg.activation, cfg.ortho_init) == ((16,), "relu", False)
        lstms = [m for m in agent.actor.modules() if isinstance(m, nn.LSTM)]
        assert [(m.hidden_size, m.num_layers) for m in lstms] == [(24, 2)]
    finally:
        agent.close()
    path.write_text(PPO_LSTM_YML.replace("MlpLstmPolicy", "MlpPolicy"))
    with pytest.raises(ZooError, match=r"policy_kwargs .*lstm_hidden_size.*: no exact natrl equivalent"):
        zoo_preset(path, "ppo", "CartPoleNoVel-v1", PPO.config_cls)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("dict(log_std_init=-2, ortho_init=False, activation_fn=nn.ReLU, net_arch=dict(pi=[256, 256], vf=[64]))",
         {"log_std_init": -2, "ortho_init": False, "activation_fn": nn.ReLU,
          "net_arch": {"pi": [256, 256], "vf": [64]}}),
        ("{'norm_obs': True, 'norm_reward': False}", {"norm_obs": True, "norm_reward": False}),
        ("dict(activation_fn=th.nn.ELU, net_arch=(8,), x=None, y='s', z=+1.5e-3)",
         {"activation_fn": nn.ELU, "net_arch": (8,), "x": None, "y": "s", "z": 1.5e-3}),
        ("dict(a=torch.nn.GELU, b=nn.LeakyReLU, c=nn.Tanh)", {"a": nn.GELU, "b": nn.LeakyReLU, "c": nn.Tanh}),
    ],
)  # fmt: skip
def test_python_literals_are_read_from_the_syntax_tree(text: str, expected: object) -> None:
    assert parse_python_literal(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "__import__('os').system('x')",
        "dict(activation_fn=os.system)",
        "dict(a=open('f'))",
        "dict(**globals())",
        "[x for x in ().__class__.__base__.__subclasses__()]",
        "lambda: 0",
        "nn.Module",
        "nn.ReLU()",
        "dict(net_arch=[64] * 2)",
        "eval('1')",
        "ReLU",
    ],
)
def test_anything_but_literals_is_refused(text: str) -> None:
    with pytest.raises(ZooError, match="data, never code"):
        parse_python_literal(text, field="policy_kwargs")


def test_a_yaml_python_tag_is_refused_and_runs_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    marker = tmp_path / "PWNED"
    evil = tmp_path / "evil.yml"
    evil.write_text(f"CartPole-v1:\n  n_timesteps: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(ZooError, match=r"not a plain YAML data file.*python/object/apply:os.system"):
        zoo_preset(evil, "trpo", "CartPole-v1", TRPO.config_cls)
    assert main(["train", "trpo", "CartPole-v1", "--hyperparams", str(evil), "--run-dir", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "natrl: error:" in err and "!!python" in err
    assert not marker.exists() and not (tmp_path / "r").exists()


def test_policy_kwargs_that_call_code_are_refused_and_run_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "PWNED"
    evil = tmp_path / "evil.yml"
    evil.write_text(
        "CartPole-v1:\n  n_timesteps: 1000\n"
        f"  policy_kwargs: \"dict(net_arch=__import__('os').system('touch {marker}'))\"\n"
    )
    assert main(["train", "ppo", "CartPole-v1", "--hyperparams", str(evil), "--run-dir", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "policy_kwargs: the call" in err and "never code" in err
    assert not marker.exists() and not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("frame_stack: 4", "frame_stack: natrl stacks frames only inside its Atari wrapper"),
        ("callback: rl_zoo3.callbacks.ParallelTrainCallback", "callback: natrl builds no callback from a file"),
        ("env_wrapper: [my_package.wrappers.TimeFeature]", "env_wrapper names 'my_package.wrappers.TimeFeature'"),
        ("env_wrapper:\n    - stable_baselines3.common.atari_wrappers.AtariWrapper", "stable-baselines3's wrappers"),
        ("clip_ratio: 0.2", "unknown key 'clip_ratio' for stable-baselines3 PPO"),
        ("use_sde: True", "use_sde=True has no natrl equivalent"),
        ("learning_rate: 1e-3", "YAML 1.1 reads 1e-3 as a string; write !!float 1e-3"),
        ("policy: my_package.MyPolicy", "a class path, which natrl does not import"),
        ("policy_kwargs: dict(activation_fn=nn.LeakyReLU)", "activation_fn=LeakyReLU: natrl's activations are"),
        ("policy_kwargs: dict(optimizer_kwargs=dict(eps=1e-5))", "policy_kwargs optimizer_kwargs: no exact natrl"),
        ("normalize: dict(norm_obs=True, clip_obs=5.0)", "normalize clip_obs=5.0"),
    ],
)
def test_a_key_natrl_cannot_translate_exactly_is_one_line_naming_it(
    line: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "ppo.yml"
    path.write_text(f"CartPole-v1:\n  n_timesteps: 1000\n  {line}\n")
    with pytest.raises(ZooError, match=f"^{path} \\[CartPole-v1\\]: .*"):
        zoo_preset(path, "ppo", "CartPole-v1", PPO.config_cls)
    assert main(["train", "ppo", "CartPole-v1", "--hyperparams", str(path), "--run-dir", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err


def test_a_gymnasium_wrapper_without_arguments_becomes_natrls_wrapper(tmp_path: Path) -> None:
    path = tmp_path / "trpo.yml"
    path.write_text("Pendulum-v1:\n  n_timesteps: 1000\n  env_wrapper:\n    - gymnasium.wrappers.ClipAction\n")
    preset, _ = zoo_preset(path, "trpo", "Pendulum-v1", TRPO.config_cls)
    import gymnasium

    assert preset.wrapper is not None and preset.wrapper.endswith(":ClipAction")
    module, _, name = preset.wrapper.partition(":")
    assert getattr(sys.modules[module], name) is gymnasium.wrappers.ClipAction


def test_cli_runs_a_zoo_file_and_records_it(
    files: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"
    args = ["train", "trpo", "CartPole-v1", "--hyperparams", str(files / "trpo.yml"), "--steps", "1024",
            "--run-dir", str(run), "--eval-episodes", "2", "--set", "critic_epochs=3"]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "[CartPole-v1]" in out and "cg_damping=0.002 → damping=0.002" in out
    spec = RunSpec.read(run)
    assert spec.preset_source == str(files / "trpo.yml") and spec.preset_table == "CartPole-v1"
    hp = spec.hyperparameters
    assert (hp["n_steps"], hp["critic_batch_size"], hp["critic_lr"], hp["critic_epochs"]) == (256, 256, "lin_2e-3", 3)
    assert json.loads((run / "eval.json").read_text())["timesteps"] == 1024
    # --resume keeps the run's hyperparameters: a zoo file there is refused
    assert main(["train", "trpo", "CartPole-v1", "--run-dir", str(run), "--resume", "--hyperparams", "x.yml"]) == 2
    assert "--hyperparams starts a new run" in capsys.readouterr().err


A2C_YML = """\
CartPole-v1:
  n_envs: 8
  n_timesteps: !!float 5e5
  policy: 'MlpPolicy'
  ent_coef: 0.0

Pendulum-v1:
  normalize: true
  n_envs: 4
  n_timesteps: !!float 1e6
  policy: 'MlpPolicy'
  ent_coef: 0.01
  max_grad_norm: 0.6
  n_steps: 8
  gae_lambda: 0.9
  vf_coef: 0.4
  gamma: 0.95
  use_rms_prop: false
  normalize_advantage: true
  learning_rate: lin_7e-4
  policy_kwargs: "dict(log_std_init=-2, ortho_init=False)"
"""


def test_a2c_tables_are_stable_baselines3s_a2c(tmp_path: Path) -> None:
    """A zoo a2c.yml table gives natrl's A2C the values SB3's A2C would get (the names are natrl's too); what the file
    leaves out is SB3 A2C's default (n_steps 5, RMSprop, vf_coef 0.5, ...)."""
    from natrl import A2C

    (tmp_path / "a2c.yml").write_text(A2C_YML)
    agent, preset, notes = _agent(A2C, tmp_path / "a2c.yml", "CartPole-v1")
    try:
        cfg = agent.config
        assert preset.total_steps == 500_000 and notes == []
        assert (cfg.n_envs, cfg.n_steps, cfg.ent_coef, cfg.vf_coef, cfg.learning_rate) == (8, 5, 0.0, 0.5, 7e-4)
        assert cfg.use_rms_prop and isinstance(agent.optimizer, __import__("torch").optim.RMSprop)
    finally:
        agent.close()
    agent, preset, _ = _agent(A2C, tmp_path / "a2c.yml", "Pendulum-v1")
    try:
        cfg = agent.config
        assert (cfg.n_envs, cfg.n_steps, cfg.gae_lambda, cfg.gamma) == (4, 8, 0.9, 0.95)
        assert (cfg.ent_coef, cfg.max_grad_norm, cfg.vf_coef, cfg.learning_rate) == (0.01, 0.6, 0.4, "lin_7e-4")
        assert not cfg.use_rms_prop and cfg.normalize_advantage and cfg.normalize_obs and cfg.normalize_reward
        assert (cfg.log_std_init, cfg.ortho_init) == (-2, False)
    finally:
        agent.close()
    (tmp_path / "bad.yml").write_text("CartPole-v1:\n  n_timesteps: 1000\n  clip_range: 0.2\n")
    with pytest.raises(ZooError, match="unknown key 'clip_range' for stable-baselines3 A2C"):
        zoo_preset(tmp_path / "bad.yml", "a2c", "CartPole-v1", A2C.config_cls)
