"""The language policy of the PPO loop: loading, sampling, batching and the forward pass it trains through.

:class:`Policy` bundles a causal LM (LoRA-wrapped by default, so the reference
policy is the same weights with the adapter disabled), its tokenizer and a
linear *value head* on the last hidden state with one output per objective
(TRL's old ``AutoModelForCausalLMWithValueHead`` design, which TRL 1.x no longer
ships). Prompts are rendered with the tokenizer's chat template
(:func:`aligner_proxy.core.backends.tokenizer.render_chat_template`, as the proxy
does), left-padded for generation, and re-collated as ``[prompt | answer]``
rows for the training passes. :func:`forward` passes explicit position ids so
that a left-padded row gets the same log-probs as the row alone (the PPO ratio
depends on it) and keeps only the answer's logits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from training.args import ModelArguments, shared_help

if TYPE_CHECKING:
    from peft import LoraConfig


@dataclass
class PolicyModelArguments(ModelArguments):
    """The model arguments of the RL policies (PPO and GRPO): a small adapter on the attention's q and v.

    No LoRA dropout: PPO's ratio must compare the same function at rollout and
    update time (:func:`build_policy` puts the rest of the model in eval mode too).
    """

    lora_r: int = field(default=8, metadata=shared_help("lora_r"))
    lora_alpha: int = field(default=16, metadata=shared_help("lora_alpha"))
    lora_dropout: float = field(default=0.0, metadata=shared_help("lora_dropout"))
    lora_target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "v_proj"], metadata=shared_help("lora_target_modules")
    )


class PolicySettings(Protocol):
    """The fields of :class:`~training.rl.ppo.PPOConfig` this module reads."""

    model: str
    cache_dir: str
    seed: int
    max_prompt_tokens: int
    temperature: float


@dataclass(frozen=True)
class Prompt:
    """A training or evaluation prompt and whether it is a harmful request."""

    text: str
    harmful: bool


@dataclass
class Policy:
    """The trainable policy: causal LM (LoRA-wrapped or full), tokenizer, value head and the reference."""

    model: Any
    tokenizer: Any
    value_head: Any
    reference: Any | None  # a frozen copy when not using LoRA; None means "the base with the adapter disabled"
    eos_ids: list[int]
    pad_id: int

    def policy_parameters(self) -> list[Any]:
        return [p for p in self.model.parameters() if p.requires_grad]


def build_policy(config: PolicySettings, n_objectives: int, *, peft_config: LoraConfig | None) -> Policy:
    """Load the policy ``config.model`` and add a zero value head.

    With ``peft_config`` the model is wrapped in that adapter and the reference
    is the base with the adapter disabled; without, the reference is a frozen copy.
    """
    import copy

    import torch
    from transformers import AutoModelForCausalLM

    from training.trainers import resolve_with_tokenizer

    path, tokenizer = resolve_with_tokenizer(config.model, Path(config.cache_dir))
    torch.manual_seed(config.seed)
    model: Any = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    reference = None
    if peft_config is not None:
        from peft import get_peft_model

        model = get_peft_model(model, peft_config)
    else:
        reference = copy.deepcopy(model).eval().requires_grad_(False)
    model.eval()  # no dropout: the ratio must compare the same function (as TRL's PPO does)
    hidden = model.config.get_text_config().hidden_size
    value_head = torch.nn.Linear(hidden, n_objectives)
    torch.nn.init.zeros_(value_head.weight)
    torch.nn.init.zeros_(value_head.bias)
    eos = model.generation_config.eos_token_id if model.generation_config is not None else None
    eos_ids = sorted({*([eos] if isinstance(eos, int) else (eos or [])), tokenizer.eos_token_id} - {None})
    return Policy(model, tokenizer, value_head, reference, eos_ids, int(tokenizer.pad_token_id))


def render_prompt(policy: Policy, text: str, max_tokens: int) -> list[int]:
    """Token ids of the chat-rendered prompt (its question cut to ``max_tokens``, tail kept)."""
    from aligner_proxy.core.backends.tokenizer import render_chat_template, truncate_tokens
    from aligner_proxy.core.generation import ChatMessage

    question = truncate_tokens(policy.tokenizer, text, max_tokens, keep="tail")
    rendered = render_chat_template(policy.tokenizer, [ChatMessage(role="user", content=question)])
    return list(policy.tokenizer(rendered, add_special_tokens=False)["input_ids"])


@dataclass
class Sample:
    prompt: Prompt
    prompt_ids: list[int]
    completion_ids: list[int]  # ends with an EOS id when the answer ended
    text: str


def generate(
    policy: Policy, prompts: Sequence[Prompt], config: PolicySettings, *, max_new_tokens: int, greedy: bool
) -> list[Sample]:
    import torch

    encoded = [render_prompt(policy, p.text, config.max_prompt_tokens) for p in prompts]
    width = max(len(e) for e in encoded)
    input_ids = torch.full((len(encoded), width), policy.pad_id, dtype=torch.long)
    attention = torch.zeros((len(encoded), width), dtype=torch.long)
    for row, ids in enumerate(encoded):
        input_ids[row, width - len(ids) :] = torch.tensor(ids)
        attention[row, width - len(ids) :] = 1
    kwargs: dict[str, Any] = {
        "max_new_tokens": max_new_tokens,
        "pad_token_id": policy.pad_id,
        "eos_token_id": policy.eos_ids,
    }
    kwargs.update(
        {"do_sample": False}
        if greedy
        else {"do_sample": True, "temperature": config.temperature, "top_k": 0, "top_p": 1.0}
    )
    with torch.inference_mode():
        out = policy.model.generate(input_ids=input_ids, attention_mask=attention, **kwargs)
    samples = []
    for row, prompt in enumerate(prompts):
        completion: list[int] = []
        for token in out[row, width:].tolist():
            completion.append(token)
            if token in policy.eos_ids:
                break
        if not completion:  # max_new_tokens >= 1, but be safe
            completion = [policy.eos_ids[0]]
        text = policy.tokenizer.decode(completion, skip_special_tokens=True)
        samples.append(Sample(prompt, encoded[row], completion, text))
    return samples


def collate(samples: Sequence[Sample], pad_id: int) -> dict[str, Any]:
    """Left-padded prompts and right-padded answers in one batch.

    Keys: ``input_ids``, ``attention_mask``, ``mask`` (answer tokens), ``P`` (prompt width), ``T`` (answer width).
    """
    import torch

    p_width = max(len(s.prompt_ids) for s in samples)
    t_width = max(len(s.completion_ids) for s in samples)
    n = len(samples)
    input_ids = torch.full((n, p_width + t_width), pad_id, dtype=torch.long)
    attention = torch.zeros((n, p_width + t_width), dtype=torch.long)
    mask = torch.zeros((n, t_width))
    for row, s in enumerate(samples):
        input_ids[row, p_width - len(s.prompt_ids) : p_width] = torch.tensor(s.prompt_ids)
        attention[row, p_width - len(s.prompt_ids) : p_width] = 1
        input_ids[row, p_width : p_width + len(s.completion_ids)] = torch.tensor(s.completion_ids)
        attention[row, p_width : p_width + len(s.completion_ids)] = 1
        mask[row, : len(s.completion_ids)] = 1.0
    return {"input_ids": input_ids, "attention_mask": attention, "mask": mask, "P": p_width, "T": t_width}


def forward(
    policy: Policy, batch: dict[str, Any], rows: Any, *, temperature: float, reference: bool = False
) -> tuple[Any, Any]:
    """Log-probs of the answer tokens ``[n, T]`` and values ``[n, T, K]`` (``None`` for the reference)."""
    import contextlib

    import torch

    input_ids, attention = batch["input_ids"][rows], batch["attention_mask"][rows]
    p, t = batch["P"], batch["T"]
    position_ids = (attention.cumsum(-1) - 1).clamp(min=0)  # as generate() numbers left-padded rows
    if reference and policy.reference is not None:
        model, ctx = policy.reference, contextlib.nullcontext()
    elif reference:
        model, ctx = policy.model, policy.model.disable_adapter()
    else:
        model, ctx = policy.model, contextlib.nullcontext()
    with ctx:
        out = model(
            input_ids=input_ids,
            attention_mask=attention,
            position_ids=position_ids,
            output_hidden_states=not reference,
            logits_to_keep=t + 1,
        )
    logits = out.logits[:, :-1].float() / max(temperature, 1e-6)  # positions P-1 .. P+T-2 predict the T answer tokens
    logp = torch.log_softmax(logits, -1).gather(-1, input_ids[:, p:, None])[..., 0] * batch["mask"][rows]
    if reference:
        return logp, None
    hidden = out.hidden_states[-1][:, p - 1 : p - 1 + t]
    return logp, policy.value_head(hidden.float())
