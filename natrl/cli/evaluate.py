"""``natrl eval``: run episodes with a saved agent, optionally rendered or recorded as a video."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from natrl.cli.checks import check_device, check_env_id, import_gym_packages
from natrl.cli.common import CLIError, display_path

if TYPE_CHECKING:
    from natrl.rl import EvalResult, OnPolicyAgent


def _model_path(arg: str) -> Path:
    from natrl.runs import CHECKPOINT_DIR, MODEL_FILE, CheckpointManager

    path = Path(arg)
    if path.is_dir():
        if (path / MODEL_FILE).is_file():
            return path / MODEL_FILE
        checkpoints = CheckpointManager(path / CHECKPOINT_DIR).list()
        if checkpoints:
            return checkpoints[-1][1]
        raise CLIError(f"{path} holds no {MODEL_FILE} and no checkpoints")
    return path


def _episodes(
    agent: OnPolicyAgent, env: Any, episodes: int, seed: int, stochastic: bool, frames: list | None
) -> EvalResult:
    import numpy as np

    from natrl.rl import EvalResult

    returns: list[float] = []
    lengths: list[int] = []
    for i in range(episodes):
        obs, _ = env.reset(seed=seed + i)
        total, length, done, state = 0.0, 0, False, None  # a recurrent policy starts each episode from zeros
        if frames is not None:
            frames.append(env.render())
        while not done:
            action, state = agent.predict(obs, state, deterministic=not stochastic)
            obs, reward, terminated, truncated, _ = env.step(action)
            total += float(reward)
            length += 1
            done = bool(terminated or truncated)
            if frames is not None:
                frames.append(env.render())
        returns.append(total)
        lengths.append(length)
    return EvalResult(float(np.mean(returns)), float(np.std(returns)), returns, lengths)


def _video_writer_check(path: Path) -> None:
    suffix = path.suffix.lower()
    try:
        import imageio  # noqa: F401
    except ImportError:
        raise CLIError("--video needs imageio: pip install imageio (and imageio-ffmpeg for .mp4)") from None
    if suffix == ".gif":
        try:
            import PIL  # noqa: F401
        except ImportError:
            raise CLIError("writing .gif videos needs pillow: pip install pillow") from None
    elif suffix in (".mp4", ".webm", ".avi", ".mkv", ".mov"):
        try:
            import imageio_ffmpeg  # noqa: F401
        except ImportError:
            raise CLIError(
                f"writing {suffix} videos needs imageio-ffmpeg: pip install imageio-ffmpeg (or use --video out.gif)"
            ) from None
    else:
        raise CLIError(f"--video: unsupported file type {suffix or '(none)'!r}; use .gif or .mp4")


def cmd_eval(args: argparse.Namespace) -> int:
    """``natrl eval``: load a model, run episodes, optionally render or record them."""
    from natrl.rl import load_agent

    if args.video and "MUJOCO_GL" not in os.environ and not os.environ.get("DISPLAY"):
        os.environ["MUJOCO_GL"] = "egl"  # headless MuJoCo rendering (must be set before mujoco loads)
    path = _model_path(args.model)
    check_device(args.device)
    import_gym_packages(args.gym_packages)
    if args.env is not None:
        check_env_id(args.env)
    agent = load_agent(str(path), device=args.device, **({"env": args.env} if args.env else {}))
    try:
        visual = args.render or args.video is not None
        episodes = args.episodes or (1 if visual else 10)
        seed = agent.seed + 10_000 if args.seed is None else args.seed
        if not visual:
            result = agent.evaluate(episodes, deterministic=not args.stochastic, seed=seed)
        else:
            result = _visual_eval(agent, args, episodes, seed)
    finally:
        agent.close()
    mode = "stochastic" if args.stochastic else "deterministic"
    print(
        f"{agent.algo} on {agent.env_id} ({agent.num_timesteps:,} steps) from {display_path(path)}: "
        f"return {result.mean:.1f} ± {result.std:.1f} over {episodes} "
        f"episode{'s' if episodes > 1 else ''} ({mode})"
    )
    print("returns: " + ", ".join(f"{r:.1f}" for r in result.returns))
    if args.video:
        print(f"video: {args.video}")
    return 0


def _visual_eval(agent: OnPolicyAgent, args: argparse.Namespace, episodes: int, seed: int) -> EvalResult:
    import gymnasium as gym

    if agent.env_id not in gym.registry:
        raise CLIError(f"cannot render {agent.env_id}: not a registered Gymnasium id")
    video = Path(args.video) if args.video else None
    if video is not None and args.render:
        raise CLIError("--render and --video cannot be combined; record with --video alone")
    if video is not None:
        _video_writer_check(video)
    if (
        args.render
        and sys.platform.startswith("linux")
        and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    ):
        raise CLIError(
            "--render needs a display (DISPLAY is not set); record the episodes with --video out.gif instead"
        )
    mode = "human" if args.render else "rgb_array"
    frames: list | None = [] if video is not None and not args.render else None
    try:
        env = gym.make(agent.env_id, render_mode=mode)
    except gym.error.DependencyNotInstalled as exc:
        raise CLIError(f"rendering {agent.env_id} needs an extra package: {exc}") from None
    try:
        result = _episodes(agent, env, episodes, seed, args.stochastic, frames)
    except gym.error.DependencyNotInstalled as exc:
        raise CLIError(f"rendering {agent.env_id} needs an extra package: {exc}") from None
    except Exception as exc:
        hint = " (no display? use --video, or for MuJoCo set MUJOCO_GL=egl or osmesa)"
        raise CLIError(f"rendering {agent.env_id} failed: {type(exc).__name__}: {exc}{hint}") from None
    finally:
        env.close()
    if video is not None and frames:
        import imageio.v2 as imageio

        fps = args.fps or int(env.metadata.get("render_fps") or 30)
        video.parent.mkdir(parents=True, exist_ok=True)
        if video.suffix.lower() == ".gif":  # encoded in memory, then written atomically: a full disk is one line
            import io

            from natrl.atomic import atomic_write_bytes

            buf = io.BytesIO()
            imageio.mimsave(buf, frames, format="GIF", duration=1000.0 / fps, loop=0)
            atomic_write_bytes(video, buf.getvalue())
        else:
            imageio.mimsave(video, frames, fps=fps)
    return result
