"""Toy constrained problems that check the PPO combiners without a language model.

Safety-Gymnasium and SafePO check safe-RL optimisers on environments where
the most rewarding behaviour is unsafe; these two tabular CMDPs play that role
at unit-test scale (milliseconds per iteration on one CPU thread):

- ``bandit``: a contextual bandit, 4 contexts × 4 arms. Arm rewards are
  ``1.0, 0.75, 0.5, 0.2`` (plus Gaussian noise) and the probability that an
  arm incurs a unit cost is ``1.0, 0.6, 0.1, 0.0``, the arms shuffled per
  context. Unconstrained, the best arm costs 1 every time; under a limit of
  0.25 the optimum mixes arms (λ* ≈ 0.56 on the raw scale).
- ``grid``: a 3 × 5 grid, start bottom-left, goal bottom-right, the three cells
  between them hazardous (cost 1 on entering). Each move costs 0.05 reward and
  reaching the goal pays 1: the straight path earns 0.8 at cost 3, the detour
  through the middle row 0.7 at cost 0. Horizon 12.

The policy is a table of logits per state with a value table per objective;
:func:`exact_returns` evaluates it exactly (dynamic programming over the
horizon), so the curves show ``J_r`` and ``J_c`` without sampling noise.

CLI: ``python -m training.rl.toy --config training/configs/rl_toy.yaml`` writes
``docs/img/rl_toy_<problem>.png`` and ``<output_dir>/toy_<problem>.json``.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from training.rl.advantages import RolloutBatch, gae
from training.rl.combiners import MultiObjectiveConfig, build_combiner
from training.rl.ppo_update import PPOHyper

logger = logging.getLogger(__name__)

Problem = Literal["bandit", "grid"]
KINDS: dict[str, Literal["reward", "cost"]] = {"reward": "reward", "cost": "cost"}
RUNS = ("unconstrained", "lagrangian", "cup", "gapo", "pgapo")


@dataclass
class ToyConfig(MultiObjectiveConfig):
    """One toy run (``problem`` × ``combiner``), or with the CLI a comparison of the ``compare`` runs."""

    problem: Problem = field(default="bandit", metadata={"help": "bandit | grid."})
    cost_limit: float | None = field(  # type: ignore[assignment]
        default=None, metadata={"help": "d in J_c <= d. None: the problem's default (bandit 0.25, grid 0.5)."}
    )
    lambda_init: float = field(default=0.5, metadata={"help": "lagrangian: initial λ (> 0)."})
    lambda_lr: float = field(default=0.2, metadata={"help": "lagrangian: learning rate of log λ."})
    lambda_max: float | None = field(default=5.0, metadata={"help": "lagrangian: cap on λ. None: no cap."})
    projection_lr: float | None = field(default=0.05, metadata={"help": "cup: learning rate of the projection."})
    projection_max_extra_epochs: int = field(
        default=32, metadata={"help": "cup: extra projection epochs (ν doubled each) while Ĉ > d."}
    )
    iterations: int = field(default=150, metadata={"help": "Rollout + update iterations."})
    batch_size: int = field(default=256, metadata={"help": "Episodes per rollout."})
    learning_rate: float = field(default=0.01, metadata={"help": "Adam learning rate (logits and value tables)."})
    epochs: int = field(default=2, metadata={"help": "PPO epochs per rollout."})
    minibatch_size: int = field(default=256, metadata={"help": "Episodes per minibatch."})
    clip_range: float = field(default=0.2, metadata={"help": "PPO ratio clip ε."})
    normalize_advantages: Literal["none", "center", "whiten"] = field(
        default="center", metadata={"help": "Per-objective advantage normalisation before combining."}
    )
    gamma: float = field(default=1.0, metadata={"help": "Discount (the horizon is finite)."})
    lam: float = field(default=0.95, metadata={"help": "GAE λ."})
    seed: int = field(default=0, metadata={"help": "Seed of the environment noise, sampling and minibatches."})
    problems: list[str] = field(default_factory=lambda: ["bandit", "grid"], metadata={"help": "CLI: problems."})
    compare: list[str] = field(
        default_factory=lambda: list(RUNS),
        metadata={"help": "CLI: runs to compare; 'unconstrained' is weighted with cost weight 0."},
    )
    output_dir: str = field(default="runs/rl_toy", metadata={"help": "Where the histories (JSON) go."})
    img_dir: str = field(default="docs/img", metadata={"help": "Where the learning-curve PNGs go."})


# --------------------------------------------------------------------------- environments


@dataclass
class TabularCMDP:
    """A finite-horizon CMDP with deterministic transitions; the last state is the absorbing terminal."""

    name: str
    next_state: Any  # [S, A] long
    reward: Any  # [S, A] mean reward
    cost: Any  # [S, A] mean cost (a probability when cost_bernoulli)
    init: Any  # [S] initial distribution
    horizon: int
    reward_noise: float = 0.0
    cost_bernoulli: bool = False
    default_cost_limit: float = 0.0

    @property
    def n_states(self) -> int:
        return int(self.next_state.shape[0])

    @property
    def n_actions(self) -> int:
        return int(self.next_state.shape[1])

    @property
    def terminal(self) -> int:
        return self.n_states - 1


def make_bandit(seed: int = 0, n_contexts: int = 4) -> TabularCMDP:
    import torch

    g = torch.Generator().manual_seed(seed)
    base_r = torch.tensor([1.0, 0.75, 0.5, 0.2])
    base_c = torch.tensor([1.0, 0.6, 0.1, 0.0])
    n_actions = len(base_r)
    reward = torch.zeros(n_contexts + 1, n_actions)
    cost = torch.zeros(n_contexts + 1, n_actions)
    for s in range(n_contexts):
        perm = torch.randperm(n_actions, generator=g)
        reward[s], cost[s] = base_r[perm], base_c[perm]
    next_state = torch.full((n_contexts + 1, n_actions), n_contexts, dtype=torch.long)
    init = torch.cat([torch.full((n_contexts,), 1.0 / n_contexts), torch.zeros(1)])
    return TabularCMDP(
        "bandit",
        next_state,
        reward,
        cost,
        init,
        horizon=1,
        reward_noise=0.1,
        cost_bernoulli=True,
        default_cost_limit=0.25,
    )


def make_grid(rows: int = 3, cols: int = 5, step_reward: float = -0.05, goal_reward: float = 1.0) -> TabularCMDP:
    import torch

    n = rows * cols
    start, goal = (rows - 1) * cols, rows * cols - 1
    hazards = {(rows - 1) * cols + c for c in range(1, cols - 1)}
    moves = [(-1, 0), (1, 0), (0, -1), (0, 1)]  # up, down, left, right
    next_state = torch.full((n + 1, 4), n, dtype=torch.long)
    reward = torch.zeros(n + 1, 4)
    cost = torch.zeros(n + 1, 4)
    for s in range(n):
        if s == goal:
            continue  # goal cells are never left: entering it ends the episode
        r, c = divmod(s, cols)
        for a, (dr, dc) in enumerate(moves):
            rr, cc = min(max(r + dr, 0), rows - 1), min(max(c + dc, 0), cols - 1)
            s2 = rr * cols + cc
            reward[s, a] = step_reward + (goal_reward if s2 == goal else 0.0)
            cost[s, a] = 1.0 if s2 in hazards else 0.0
            next_state[s, a] = n if s2 == goal else s2
    init = torch.zeros(n + 1)
    init[start] = 1.0
    return TabularCMDP("grid", next_state, reward, cost, init, horizon=12, default_cost_limit=0.5)


def make_problem(problem: str, seed: int = 0) -> TabularCMDP:
    if problem == "bandit":
        return make_bandit(seed)
    if problem == "grid":
        return make_grid()
    raise ValueError(f"unknown toy problem {problem!r}; known: bandit, grid")


# --------------------------------------------------------------------------- policy, rollouts, evaluation


def make_policy(env: TabularCMDP, n_objectives: int = 2) -> Any:
    """A table of logits ``[S, A]`` (uniform policy) and of values ``[S, K]``, as a ``torch.nn.Module``."""
    import torch

    class TabularPolicy(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.logits = torch.nn.Parameter(torch.zeros(env.n_states, env.n_actions))
            self.values = torch.nn.Parameter(torch.zeros(env.n_states, n_objectives))

        def probs(self) -> Any:
            return torch.softmax(self.logits.detach(), dim=-1)

    return TabularPolicy()


@dataclass
class Episodes:
    states: Any
    actions: Any
    mask: Any
    signals: dict[str, Any]


def rollout(env: TabularCMDP, policy: Any, n: int, generator: Any) -> Episodes:
    """Sample ``n`` episodes with the current policy, vectorised over episodes."""
    import torch

    h = env.horizon
    states = torch.zeros(n, h, dtype=torch.long)
    actions = torch.zeros(n, h, dtype=torch.long)
    mask = torch.zeros(n, h)
    rewards = torch.zeros(n, h)
    costs = torch.zeros(n, h)
    s = torch.multinomial(env.init, n, replacement=True, generator=generator)
    alive = torch.ones(n, dtype=torch.bool)
    probs = policy.probs()
    for t in range(h):
        a = torch.multinomial(probs[s], 1, generator=generator).squeeze(1)
        states[:, t], actions[:, t], mask[:, t] = s, a, alive.float()
        r = env.reward[s, a] + env.reward_noise * torch.randn(n, generator=generator)
        c = env.cost[s, a]
        if env.cost_bernoulli:
            c = torch.bernoulli(c, generator=generator)
        rewards[:, t], costs[:, t] = r * alive, c * alive
        s = env.next_state[s, a]
        alive = alive & (s != env.terminal)
        if not alive.any():
            break
    return Episodes(states, actions, mask, {"reward": rewards, "cost": costs})


def exact_returns(env: TabularCMDP, probs: Any) -> tuple[float, float]:
    """``(J_r, J_c)`` of the state-conditioned policy ``probs [S, A]``, by propagating the state distribution."""
    import torch

    d = env.init.clone()
    d[env.terminal] = 0.0
    j_r = j_c = 0.0
    for _ in range(env.horizon):
        joint = d[:, None] * probs  # [S, A]
        j_r += float((joint * env.reward).sum())
        j_c += float((joint * env.cost).sum())
        d = torch.zeros_like(d).index_add_(0, env.next_state.reshape(-1), joint.reshape(-1))
        d[env.terminal] = 0.0
    return j_r, j_c


def to_batch(episodes: Episodes, policy: Any, gamma: float, lam: float) -> RolloutBatch:
    import torch

    with torch.no_grad():
        logp = torch.log_softmax(policy.logits, -1)[episodes.states].gather(-1, episodes.actions[..., None])[..., 0]
        values = policy.values[episodes.states]  # [N, T, K]
    advantages, returns, old_values, totals = {}, {}, {}, {}
    for k, name in enumerate(KINDS):
        v = values[..., k] * episodes.mask
        advantages[name], returns[name] = gae(episodes.signals[name], v, episodes.mask, gamma=gamma, lam=lam)
        old_values[name] = v
        totals[name] = episodes.signals[name].sum(dim=1)
    return RolloutBatch(logp * episodes.mask, episodes.mask, advantages, returns, old_values, totals, dict(KINDS))


def make_evaluate(episodes: Episodes, policy: Any) -> Any:
    import torch

    def evaluate(idx: Any) -> tuple[Any, dict[str, Any]]:
        states, actions, mask = episodes.states[idx], episodes.actions[idx], episodes.mask[idx]
        logp = torch.log_softmax(policy.logits[states], -1).gather(-1, actions[..., None])[..., 0] * mask
        values = policy.values[states]
        return logp, {name: values[..., k] * mask for k, name in enumerate(KINDS)}

    return evaluate


# --------------------------------------------------------------------------- training


def run_config(config: ToyConfig, run: str) -> ToyConfig:
    """The config of one named comparison run ('unconstrained' = weighted with weights [1, 0])."""
    if run == "unconstrained":
        return replace(config, combiner="weighted", weights=[1.0, 0.0])
    if run == "pgapo" and config.preferences is None:
        return replace(config, combiner="pgapo", preferences=[0.3, 0.7])
    return replace(config, combiner=run)  # type: ignore[arg-type]


def train_toy(config: ToyConfig) -> list[dict[str, float]]:
    """Train the tabular policy on ``config.problem`` with ``config.combiner``; one history row per iteration.

    Rows hold the exact ``reward`` and ``cost`` of the policy after the
    update, the sampled ``sample_cost`` of the rollout, and the rule's stats
    (``lambda/cost`` for the Lagrangian, CUP's surrogates, ...).
    """
    import torch

    env = make_problem(config.problem, config.seed)
    cost_limit = env.default_cost_limit if config.cost_limit is None else config.cost_limit
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    policy = make_policy(env)
    optimizer = torch.optim.Adam(policy.parameters(), lr=config.learning_rate)
    combiner = build_combiner(replace(config, cost_limit=cost_limit), dict(KINDS), seed=config.seed)  # type: ignore[arg-type]
    hyper = PPOHyper(
        epochs=config.epochs,
        minibatch_size=config.minibatch_size,
        clip_range=config.clip_range,
        max_grad_norm=None,
        normalize_advantages=config.normalize_advantages,
    )
    history: list[dict[str, float]] = []
    j_r, j_c = exact_returns(env, policy.probs())
    history.append({"reward": j_r, "cost": j_c, **combiner.state()})
    for _ in range(config.iterations):
        episodes = rollout(env, policy, config.batch_size, generator)
        batch = to_batch(episodes, policy, config.gamma, config.lam)
        stats = combiner.update(batch, make_evaluate(episodes, policy), [policy.logits], optimizer, hyper)
        j_r, j_c = exact_returns(env, policy.probs())
        history.append({"reward": j_r, "cost": j_c, "sample_cost": batch.objective_mean("cost"), **stats})
    return history


def main(argv: list[str] | None = None) -> None:
    import torch

    from training.rl.plots import plot_curves
    from training.trainers import parse_config

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(1)  # tabular problems: many tiny ops, where extra threads only add overhead
    config = parse_config(ToyConfig, argv)
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    for problem in config.problems:
        env = make_problem(problem, config.seed)
        limit = env.default_cost_limit if config.cost_limit is None else config.cost_limit
        runs: dict[str, list[dict[str, float]]] = {}
        for run in config.compare:
            started = time.perf_counter()
            runs[run] = train_toy(run_config(replace(config, problem=problem), run))  # type: ignore[arg-type]
            last = runs[run][-1]
            logger.info(
                "%s/%s: reward %.3f cost %.3f (limit %.2f) in %.1fs",
                problem,
                run,
                last["reward"],
                last["cost"],
                limit,
                time.perf_counter() - started,
            )
        for rows in runs.values():  # one λ column for the plot, whatever the rule calls it
            for row in rows:
                row["multiplier"] = row.get("lambda/cost", row.get("nu/cost", float("nan")))
        (out / f"toy_{problem}.json").write_text(json.dumps({"cost_limit": limit, "runs": runs}, indent=1) + "\n")
        path = plot_curves(
            runs,
            ["reward", "cost", "multiplier"],
            Path(config.img_dir) / f"rl_toy_{problem}.png",
            title=f"toy {problem}: exact J_r, J_c per iteration (λ for lagrangian, ν for cup)",
            limits={"cost": limit},
        )
        logger.info("wrote %s", path)


if __name__ == "__main__":
    main()
