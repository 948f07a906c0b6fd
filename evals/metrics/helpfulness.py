"""Helpfulness: how a reward model's score moves from the original answer to the final one.

Needs ``reward_model`` in the eval config: any one-logit sequence classifier
loaded by :class:`~aligner_proxy.core.backends.classifier.SequenceClassifierScorer`,
e.g. the one ``training.reward_model`` trains. That trainer saves ``-reward`` as
a cost by default, so the config's ``reward_model.output`` says which it is.
"""

from __future__ import annotations

from collections.abc import Sequence

from evals.metrics import MetricContext, Sample, Value, batch_metric


@batch_metric(
    "reward_delta",
    description="reward(prompt, final answer) − reward(prompt, original answer), by the reward model",
    kind="mean",
    higher_is_better=True,
    requires="reward_model",
)
def reward_delta(samples: Sequence[Sample], ctx: MetricContext) -> list[Value]:
    if ctx.reward_model is None:
        return [None] * len(samples)
    values: list[Value] = [0.0] * len(samples)  # an untouched answer moves nothing (and costs no scoring)
    changed = [i for i, s in enumerate(samples) if s.answer != s.original]
    if changed:
        prompts = [samples[i].prompt for i in changed]
        finals = [samples[i].answer for i in changed]
        originals = [samples[i].original for i in changed]
        scores = ctx.reward_model.score(prompts + prompts, finals + originals)
        n = len(changed)
        for k, i in enumerate(changed):
            values[i] = ctx.reward_sign * (float(scores[k]) - float(scores[n + k]))
    return values
