"""Reinforcement learning with the project's scorers as reward and cost signals.

The scorers that gate the proxy (:mod:`aligner_proxy.core.scorer`) share TRL's
reward-function signature, so the same objects drive policy training here:

- :mod:`~training.rl.rewards`: any scorer as a TRL reward function, reward − λ·cost, caching;
- :mod:`~training.rl.lagrangian`: the Safe RLHF Lagrange multiplier;
- :mod:`~training.rl.mgda`: min-norm gradient combination (MGDA) for GAPO / P-GAPO;
- :mod:`~training.rl.advantages`: GAE, whitening and the rollout batch every update reads;
- :mod:`~training.rl.ppo_update`: the update rules' interface, PPO's losses and the PPO epoch loop;
- :mod:`~training.rl.combiners`: the pluggable multi-objective PPO updates
  (weighted sum, PPO-Lagrangian, GAPO, P-GAPO; CUP in :mod:`~training.rl.cup`);
- :mod:`~training.rl.ppo`: PPO for language policies (value head, KL to the reference) and the CPU demo;
- :mod:`~training.rl.grpo`: TRL's ``GRPOTrainer`` on reward − λ·cost;
- :mod:`~training.rl.seq2seq_rm`: a corrector-style reward model and its token-level rewards;
- :mod:`~training.rl.blocker`: an ensemble cost model whose disagreement routes answers to the corrector;
- :mod:`~training.rl.toy`: small constrained problems that check the optimisers without a language model.

Overview and commands: ``docs/rl.md``.
"""
