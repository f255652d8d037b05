"""One policy step of sb3-contrib's TRPO and of natrl's, from the same weights on the same rollout.

Shared by the tests that check a translation between the two libraries (tests/test_bench.py: natrl preset →
sb3-contrib; tests/test_sb3_names.py: sb3-contrib names → natrl).
"""

from __future__ import annotations

from typing import Any

import torch

from natrl.rl.batch import Batch
from natrl.rl.natural import PolicyObjective


def policy_steps(model: Any, agent: Any, n_steps: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Collect ``n_steps`` with sb3-contrib's ``model``, copy its policy into natrl's ``agent``, take one policy
    step with each; returns (natrl's parameters after, sb3-contrib's after, the parameters before), flattened."""
    _, callback = model._setup_learn(10_000, None)
    model.collect_rollouts(model.env, callback, model.rollout_buffer, n_rollout_steps=n_steps)
    data = next(model.rollout_buffer.get(batch_size=None))
    sb3 = model.policy
    pairs = [
        (agent.actor.net[0], sb3.mlp_extractor.policy_net[0]),
        (agent.actor.net[2], sb3.mlp_extractor.policy_net[2]),
        (agent.actor.net[4], sb3.action_net),
    ]
    with torch.no_grad():
        for ours, theirs in pairs:
            ours.weight.copy_(theirs.weight)
            ours.bias.copy_(theirs.bias)
        agent.actor.log_std.copy_(sb3.log_std)

    def flat(side: int) -> torch.Tensor:
        log_std = agent.actor.log_std if side == 0 else sb3.log_std
        return torch.cat([log_std.detach().clone()] + [p.detach().clone().flatten() for pair in pairs
                                                        for p in pair[side].parameters()])  # fmt: skip

    before = flat(0)
    adv = data.advantages
    batch = Batch(
        obs=data.observations.float(),  # the buffer keeps the env's float64
        actions=data.actions.float(),
        log_probs=data.old_log_prob.float(),
        values=data.old_values,
        advantages=(adv - adv.mean()) / (adv.std() + 1e-8),  # sb3-contrib normalises as natrl does
        returns=data.returns,
    )
    stats = agent._policy_step(PolicyObjective(agent.actor, batch))
    assert stats["line_search_failed"] == 0.0
    model.n_critic_updates = 0  # the policy step only
    model.train()
    return flat(0), flat(1), before
