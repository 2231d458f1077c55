"""Build models from a size config (no download), or load them with `from_pretrained`."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import LlamaConfig, LlamaForCausalLM, T5Config, T5ForConditionalGeneration

from xkdbench.errors import ConfigError
from xkdbench.models.seq2seq import FAMILIES, Seq2SeqLM, load_model


@dataclass
class ModelSpec:
    """A model to build from scratch, or to load when `pretrained` is set.

    family: "llama" (decoder-only causal LM) or "t5" (encoder-decoder).
    d_model, n_layers, n_heads, d_ff: width, depth (per stack for T5), attention heads, MLP width.
    pretrained: a local checkpoint directory or hub id; when set, the sizes are ignored.
    """

    family: str = "llama"
    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4
    d_ff: int = 512
    max_positions: int = 512
    pretrained: str | None = None

    def validate(self, field: str) -> None:
        if self.pretrained:
            return
        if self.family not in FAMILIES:
            raise ConfigError(f"{field}.family: unknown model family {self.family!r}; allowed: {', '.join(FAMILIES)}")
        for name in ("d_model", "n_layers", "n_heads", "d_ff", "max_positions"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{field}.{name} must be >= 1, got {getattr(self, name)}")
        if self.d_model % self.n_heads:
            raise ConfigError(f"{field}.d_model ({self.d_model}) must be divisible by {field}.n_heads ({self.n_heads})")


def build_model(spec: ModelSpec, tokenizer, *, seed: int) -> Seq2SeqLM:
    """A freshly initialised model (seeded), or the pretrained one named by spec.pretrained."""
    if spec.pretrained:
        return load_model(spec.pretrained, tokenizer)
    torch.manual_seed(seed)
    vocab = len(tokenizer)
    if spec.family == "t5":
        config = T5Config(
            vocab_size=vocab, d_model=spec.d_model, d_kv=spec.d_model // spec.n_heads, d_ff=spec.d_ff,
            num_layers=spec.n_layers, num_decoder_layers=spec.n_layers, num_heads=spec.n_heads,
            dropout_rate=0.0, feed_forward_proj="gated-gelu", tie_word_embeddings=True,
            pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
            decoder_start_token_id=tokenizer.pad_token_id,
        )
        model = T5ForConditionalGeneration(config)
    else:
        config = LlamaConfig(
            vocab_size=vocab, hidden_size=spec.d_model, intermediate_size=spec.d_ff,
            num_hidden_layers=spec.n_layers, num_attention_heads=spec.n_heads,
            num_key_value_heads=spec.n_heads, max_position_embeddings=spec.max_positions,
            tie_word_embeddings=True, pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        )
        model = LlamaForCausalLM(config)
    return Seq2SeqLM(model, tokenizer)
