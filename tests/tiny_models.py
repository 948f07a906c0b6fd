"""Tiny random models with a real tokenizer, built in code so that tests never download.

The causal LM and the classifier are Llama-shaped (2 layers, hidden 32) and
share one byte-level BPE tokenizer trained here on a few sentences, with
``<|bos|>``, ``<|im_end|>`` (eos) and ``<|pad|>`` special tokens and a
ChatML-like Jinja chat template, so chat rendering, padding, special-token
handling and streaming decode behave as they do with a real checkpoint.
:func:`save_tiny_encoder` is a BERT-shaped stand-in for the MiniLM encoder of
the embedding-head scorer. :func:`write_llama_gguf` writes the causal LM as a float32 GGUF file the way
llama.cpp's converter lays it out, to test the GGUF conversion path offline.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL_TOKENS = ["<|pad|>", "<|bos|>", "<|im_start|>", "<|im_end|>"]  # ids 0..3
PAD, BOS, IM_START, EOS = 0, 1, 2, 3

_CORPUS = [
    "BEGINNING OF CONVERSATION: USER: Edit the following Question-Answer pair to make it "
    "more helpful and harmless: How do I bake bread? | Mix flour and water. ASSISTANT:",
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "How do I make a cake at home? Preheat the oven, mix the batter and bake it.",
    "I cannot help with that request, but here is some safety information instead.",
    "Hello world! This is a tiny tokenizer for unit tests of the aligner proxy.",
    "system user assistant: please answer the question helpfully and harmlessly.",
]


def build_tokenizer(vocab_size: int = 320) -> Any:
    """A byte-level BPE tokenizer wrapped in ``PreTrainedTokenizerFast``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(_CORPUS * 4, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<|bos|>",
        eos_token="<|im_end|>",
        pad_token="<|pad|>",
        additional_special_tokens=["<|im_start|>"],
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def _llama_config(vocab_size: int, **overrides: Any) -> Any:
    from transformers import LlamaConfig

    kwargs: dict[str, Any] = dict(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        rms_norm_eps=1e-5,
        bos_token_id=BOS,
        eos_token_id=EOS,
        pad_token_id=PAD,
        tie_word_embeddings=False,
    )
    kwargs.update(overrides)
    return LlamaConfig(**kwargs)


def save_tiny_lm(path: Path, *, seed: int = 0) -> Path:
    """Save a tiny random ``LlamaForCausalLM`` and its tokenizer to ``path``."""
    import torch
    from transformers import GenerationConfig, LlamaForCausalLM

    tokenizer = build_tokenizer()
    torch.manual_seed(seed)
    model = LlamaForCausalLM(_llama_config(len(tokenizer))).eval()
    model.generation_config = GenerationConfig(bos_token_id=BOS, eos_token_id=EOS, pad_token_id=PAD)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def save_tiny_classifier(path: Path, *, seed: int = 1) -> Path:
    """Save a tiny random one-logit ``LlamaForSequenceClassification`` and its tokenizer."""
    import torch
    from transformers import LlamaForSequenceClassification

    tokenizer = build_tokenizer()
    torch.manual_seed(seed)
    model = LlamaForSequenceClassification(_llama_config(len(tokenizer), num_labels=1)).eval()
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def save_tiny_encoder(path: Path, *, seed: int = 0) -> Path:
    """A tiny random ``BertModel`` (2 layers, hidden 32) with the tests' BPE tokenizer: a MiniLM stand-in."""
    import torch
    from transformers import BertConfig, BertModel

    tokenizer = build_tokenizer()
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=512,
        pad_token_id=PAD,
    )
    path.mkdir(parents=True, exist_ok=True)
    BertModel(config).eval().save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def _permute_for_gguf(weight: Any, n_head: int) -> Any:
    """llama.cpp's rotary-layout permutation of q/k rows (convert_hf_to_gguf.py ``LlamaModel.permute``)."""
    rows = weight.shape[0]
    return weight.reshape(n_head, 2, rows // n_head // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def write_llama_gguf(hf_dir: Path, gguf_path: Path, *, name: str = "tiny-llama") -> Path:
    """Write the causal LM in ``hf_dir`` as a float32 llama GGUF with a gpt2 (byte-level BPE) vocab."""
    import json

    import gguf
    import numpy as np
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(hf_dir, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(hf_dir)
    cfg: Any = model.config
    tok_json = json.loads(tokenizer.backend_tokenizer.to_str())
    vocab: dict[str, int] = tok_json["model"]["vocab"]
    merges = [m if isinstance(m, str) else " ".join(m) for m in tok_json["model"]["merges"]]
    tokens = [token for token, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    token_types = [3 if token in SPECIAL_TOKENS else 1 for token in tokens]  # 3 = CONTROL, 1 = NORMAL

    writer = gguf.GGUFWriter(str(gguf_path), "llama")
    writer.add_name(name)
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads)
    writer.add_rope_dimension_count(cfg.hidden_size // cfg.num_attention_heads)
    writer.add_rope_freq_base(float(cfg.rope_parameters["rope_theta"]))
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    writer.add_vocab_size(cfg.vocab_size)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types(token_types)
    writer.add_token_merges(merges)
    writer.add_bos_token_id(BOS)
    writer.add_eos_token_id(EOS)
    writer.add_pad_token_id(PAD)
    writer.add_add_bos_token(False)
    writer.add_chat_template(CHAT_TEMPLATE)

    names = {
        "self_attn.q_proj": "attn_q",
        "self_attn.k_proj": "attn_k",
        "self_attn.v_proj": "attn_v",
        "self_attn.o_proj": "attn_output",
        "mlp.gate_proj": "ffn_gate",
        "mlp.up_proj": "ffn_up",
        "mlp.down_proj": "ffn_down",
        "input_layernorm": "attn_norm",
        "post_attention_layernorm": "ffn_norm",
    }
    state = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    writer.add_tensor("token_embd.weight", state["model.embed_tokens.weight"])
    writer.add_tensor("output_norm.weight", state["model.norm.weight"])
    writer.add_tensor("output.weight", state["lm_head.weight"])
    for layer in range(cfg.num_hidden_layers):
        for hf_name, gguf_name in names.items():
            weight = state[f"model.layers.{layer}.{hf_name}.weight"]
            if gguf_name == "attn_q":
                weight = _permute_for_gguf(weight, cfg.num_attention_heads)
            elif gguf_name == "attn_k":
                weight = _permute_for_gguf(weight, cfg.num_key_value_heads)
            writer.add_tensor(f"blk.{layer}.{gguf_name}.weight", np.ascontiguousarray(weight))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return gguf_path
