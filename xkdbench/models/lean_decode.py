"""A lean KV-cached decoder for the two model families the suite builds, reading the models' own weights.

Hugging Face `generate` spends most of a decoding step of a small model on Python overhead: the model's
module tree, mask construction, cache bookkeeping, logits processors and stopping criteria. This module
decodes with a few tensor operations per layer on the same weights (fused q/k/v and gate/up projections,
one `scaled_dot_product_attention`, a KV cache allocated once for the whole decode), and reproduces
`generate`'s decoding rules exactly:

- prompts are left-padded; decoder-only positions count real tokens only (`cumsum(mask) - 1`, pads at 0)
  and pad keys are masked, as `generate` does; T5 decodes from `decoder_start_token_id` with the
  relative position bias of its first layer and cross-attention keys/values computed once;
- `num_return_sequences` repeats each prompt in place (`repeat_interleave`, the T5 encoder runs once);
- sampling divides the float32 logits by the temperature, applies HF's top-p rule (`top_p_filter`),
  and draws with `torch.multinomial(softmax(scores), 1)` once per step over the whole batch, so under
  the same seeded generator the same tokens come out as from `generate`;
- rows that drew EOS emit pad; decoding stops once every row has drawn EOS or after max_new_tokens.

`supports(model)` says which models it decodes; `Seq2SeqLM.generate` uses Hugging Face `generate` for
all others (and when its `decoder` is "hf").
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
import torch.nn.modules.module as nn_module
from transformers import LlamaForCausalLM, T5ForConditionalGeneration
from transformers.models.llama.modeling_llama import LlamaRMSNorm
from transformers.models.t5.modeling_t5 import T5LayerNorm

# the leaf modules with weights the decoder reads in place of running them
_PLAIN_LEAVES = (torch.nn.Linear, torch.nn.Embedding, LlamaRMSNorm, T5LayerNorm)


def unsupported_reason(model: torch.nn.Module) -> str | None:
    """Why the lean decoder cannot decode `model` exactly as the model itself would; None if it can."""
    try:
        return _unsupported_reason(model)
    except AttributeError:  # e.g. a config with per-layer settings, which has no single value to read
        return "a configuration without the settings of one uniform stack"


def _unsupported_reason(model: torch.nn.Module) -> str | None:
    config = model.config
    if isinstance(model, LlamaForCausalLM):
        # transformers 5 keeps the RoPE settings in rope_parameters, earlier versions in rope_scaling
        rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
        if rope.get("rope_type", rope.get("type", "default")) != "default":
            return "RoPE scaling"
        if config.num_key_value_heads != config.num_attention_heads:
            return "grouped-query attention"
        if config.attention_bias or config.mlp_bias:
            return "biased projections"
        if (getattr(config, "pretraining_tp", 1) or 1) != 1:
            return "pretraining_tp > 1"
        if getattr(config, "sliding_window", None):
            return "sliding-window attention"
    elif isinstance(model, T5ForConditionalGeneration):
        if not config.is_gated_act:
            return "a non-gated feed-forward layer"
    else:
        return f"architecture {type(model).__name__}"
    if any(p.dtype != torch.float32 for p in model.parameters()):
        return "weights other than float32 (bf16 autocast over float32 weights is supported)"
    # the decoder reads the weights and skips the modules: anything that changes what a module computes
    # (a hook, an adapter or quantised layer in place of nn.Linear) would be skipped with them
    if getattr(nn_module, "_global_forward_hooks", None) or getattr(nn_module, "_global_forward_pre_hooks", None):
        return "forward hooks"  # registered for every module (register_module_forward_hook)
    for module in model.modules():
        if module._forward_hooks or module._forward_pre_hooks:
            return "forward hooks"
        if module._parameters and not module._modules and type(module) not in _PLAIN_LEAVES:
            return "modules other than plain linear, embedding and norm layers"
    return None


def supports(model: torch.nn.Module) -> bool:
    """True when `decoder_for(model, ...)` and `generate(model, ...)` can decode this model."""
    return unsupported_reason(model) is None


def top_p_filter(scores: torch.Tensor, top_p: float) -> torch.Tensor:
    """HF's `TopPLogitsWarper` (min_tokens_to_keep=1) on scores (B, V): in ascending order, drop the tokens
    whose cumulative probability is <= 1 - top_p, always keeping the most probable one."""
    sorted_scores, order = torch.sort(scores, descending=False)
    cumulative = sorted_scores.softmax(dim=-1).cumsum(dim=-1)
    remove = cumulative <= (1 - top_p)
    remove[..., -1:] = False
    remove = remove.scatter(1, order, remove)
    return scores.masked_fill(remove, -float("inf"))


def warp(scores: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    """The scores `generate` samples from with this temperature and top_p (and top_k 0): HF's
    TemperatureLogitsWarper then TopPLogitsWarper, each only when it is not the identity."""
    if temperature != 1.0:
        scores = scores / temperature  # HF divides; multiplying by 1 / T would round differently
    if top_p < 1.0:
        scores = top_p_filter(scores, top_p)
    return scores


@torch.no_grad()
def decoder_for(model: torch.nn.Module, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, *, capacity: int,
                expand: int = 1):
    """An incremental decoder over the prompts (B, P), left-padded, each repeated `expand` times in place.

    It holds `logits` (B * expand, V), float32, for the first target token; `advance(tokens)` feeds the
    drawn tokens (B * expand,) and computes the next logits, at most `capacity` times. No gradient: decoding
    needs none, and with autograd on some kernels round differently (T5's logits moved by ~1e-6)."""
    reason = unsupported_reason(model)
    if reason is not None:
        raise ValueError(f"the lean decoder does not support {reason}")
    family = _T5Decoder if isinstance(model, T5ForConditionalGeneration) else _LlamaDecoder
    return family(model, prompt_ids, prompt_mask, capacity=capacity, expand=expand)


@torch.no_grad()
def generate(model: torch.nn.Module, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, *, max_new_tokens: int,
             do_sample: bool, eos_id: int, pad_id: int, temperature: float = 1.0, top_p: float = 1.0,
             num_return_sequences: int = 1) -> torch.Tensor:
    """The new tokens (B * num_return_sequences, T <= max_new_tokens) that Hugging Face `generate` returns
    for these settings (top_k 0, one beam); finished rows hold pad after their EOS."""
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens!r}")
    if num_return_sequences > 1 and not do_sample:
        raise ValueError("greedy decoding returns one sequence per prompt; num_return_sequences must be 1")
    if do_sample and not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    decoder = decoder_for(model, prompt_ids, prompt_mask, capacity=max_new_tokens - 1, expand=num_return_sequences)
    unfinished = torch.ones(decoder.logits.shape[0], dtype=torch.bool, device=prompt_ids.device)
    pad = torch.full_like(unfinished, pad_id, dtype=torch.long)
    drawn = []
    for step in range(max_new_tokens):
        if do_sample:
            probs = torch.softmax(warp(decoder.logits, temperature, top_p), dim=-1)
            tokens = torch.multinomial(probs, num_samples=1).squeeze(1)
        else:
            tokens = decoder.logits.argmax(dim=-1)
        tokens = torch.where(unfinished, tokens, pad)
        drawn.append(tokens)
        unfinished &= tokens != eos_id
        # the same number of steps, hence of draws from the generator, as `generate`
        if step + 1 == max_new_tokens or not unfinished.any():
            break
        decoder.advance(tokens)
    return torch.stack(drawn, dim=1)


class _KVCache:
    """Keys and values (B, H, length, head_dim) per layer, allocated on first write with the dtype the
    projections produce (bf16 under autocast), filled column by column."""

    def __init__(self, layers: int, batch: int, heads: int, length: int, head_dim: int, device):
        self.shape = (batch, heads, length, head_dim)
        self.device = device
        self.keys: list[torch.Tensor | None] = [None] * layers
        self.values: list[torch.Tensor | None] = [None] * layers

    def write(self, layer: int, start: int, keys: torch.Tensor, values: torch.Tensor):
        """Store keys/values (B, H, T, head_dim) at columns start..start+T-1; returns all columns up to them."""
        if self.keys[layer] is None:
            self.keys[layer] = torch.empty(self.shape, dtype=keys.dtype, device=self.device)
            self.values[layer] = torch.empty(self.shape, dtype=values.dtype, device=self.device)
        end = start + keys.shape[2]
        k, v = self.keys[layer], self.values[layer]
        k[:, :, start:end] = keys
        v[:, :, start:end] = values
        return k[:, :, :end], v[:, :, :end]


def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    # LlamaRMSNorm and T5LayerNorm op for op on float32 input, which the residual stream always is (under
    # autocast too); F.rms_norm rounds the same on CPU but is slower there on rows this short
    return weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


class _LlamaDecoder:
    """`LlamaForCausalLM` (multi-head attention, default RoPE): the prompt runs through in one prefill."""

    def __init__(self, model: LlamaForCausalLM, prompt_ids, prompt_mask, *, capacity: int, expand: int):
        config = model.config
        if expand > 1:  # as `generate`: every input repeated in place before the prefill
            prompt_ids = prompt_ids.repeat_interleave(expand, dim=0)
            prompt_mask = prompt_mask.repeat_interleave(expand, dim=0)
        batch, prompt_len = prompt_ids.shape
        device = prompt_ids.device
        self.heads = config.num_attention_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.heads
        self.scale = self.head_dim ** -0.5
        self.eps = config.rms_norm_eps
        inner = model.model
        self.embed = inner.embed_tokens.weight
        self.layers = [
            (layer.input_layernorm.weight,
             torch.cat([layer.self_attn.q_proj.weight, layer.self_attn.k_proj.weight, layer.self_attn.v_proj.weight]),
             layer.self_attn.o_proj.weight, layer.post_attention_layernorm.weight,
             torch.cat([layer.mlp.gate_proj.weight, layer.mlp.up_proj.weight]), layer.mlp.down_proj.weight,
             layer.mlp.act_fn.forward)
            for layer in inner.layers[: config.num_hidden_layers]
        ]
        self.norm = inner.norm.weight
        self.lm_head = model.lm_head.weight
        total = prompt_len + capacity
        self.cache = _KVCache(len(self.layers), batch, self.heads, total, self.head_dim, device)

        mask = prompt_mask.bool()
        # positions count real tokens only, pads sit at 0 (as `generate`); each new token is one further
        positions = (prompt_mask.long().cumsum(-1) - 1).masked_fill(~mask, 0)  # (B, P)
        later = positions[:, -1:] + torch.arange(1, capacity + 1, device=device)  # (B, capacity)
        self.cos, self.sin = self._rope(inner.rotary_emb, torch.cat([positions, later], dim=1))  # (B, total, 1, 1, hd)
        if bool(mask.all()):
            # no padding: no mask, as `generate` drops an all-ones mask (a causal prefill, then full attention)
            self.key_mask = None
            prefill_mask = None
        else:
            self.key_mask = torch.cat([mask, mask.new_ones(batch, capacity)], dim=1)[:, None, None, :]  # (B,1,1,total)
            causal = torch.ones(prompt_len, prompt_len, dtype=torch.bool, device=device).tril()
            # a pad query sees itself too, so that no row is fully masked (its output is never attended to)
            eye = torch.eye(prompt_len, dtype=torch.bool, device=device)
            prefill_mask = (causal & mask[:, None, None, :]) | eye  # (B, 1, P, P)
        self.length = 0
        self.logits = self._forward(prompt_ids, prefill_mask)

    @staticmethod
    def _rope(rotary, positions: torch.Tensor):
        """cos and sin (B, L, 1, 1, hd) as LlamaRotaryEmbedding computes them; sin carries the sign of
        rotate_half, so that rotate_half(x) * sin == x.roll(hd / 2) * signed_sin exactly."""
        freqs = positions[..., None].float() * rotary.inv_freq.to(device=positions.device, dtype=torch.float)
        emb = torch.cat((freqs, freqs), dim=-1)
        cos = emb.cos() * rotary.attention_scaling
        sin = emb.sin() * rotary.attention_scaling
        half = sin.shape[-1] // 2
        signed_sin = torch.cat([-sin[..., :half], sin[..., half:]], dim=-1)
        return cos[:, :, None, None, :], signed_sin[:, :, None, None, :]

    @torch.no_grad()
    def advance(self, tokens: torch.Tensor) -> None:
        """Feed the tokens just drawn (B,) and compute the next logits (B, V)."""
        self.logits = self._forward(tokens[:, None], None)

    def _forward(self, tokens: torch.Tensor, prefill_mask) -> torch.Tensor:
        """Run tokens (B, T) at the next T positions through the model; logits (B, V) of the last one."""
        batch, steps = tokens.shape
        start, end = self.length, self.length + steps
        self.length = end
        heads, head_dim, half = self.heads, self.head_dim, self.head_dim // 2
        cos, sin = self.cos[:, start:end], self.sin[:, start:end]  # (B, T, 1, 1, hd)
        if steps > 1:
            mask = prefill_mask
            causal = mask is None
        else:
            mask = None if self.key_mask is None else self.key_mask[..., :end]  # (B, 1, 1, end)
            causal = False
        x = F.embedding(tokens, self.embed)  # (B, T, D)
        for i, (norm1, qkv_w, o_w, norm2, gate_up_w, down_w, act) in enumerate(self.layers):
            h = _rms_norm(x, norm1, self.eps)
            qkv = F.linear(h, qkv_w).view(batch, steps, 3, heads, head_dim)
            qk = qkv[:, :, :2]  # queries and keys rotated together
            qk = qk * cos + qk.roll(half, dims=-1) * sin
            q = qk[:, :, 0].transpose(1, 2)  # (B, H, T, hd)
            keys, values = self.cache.write(i, start, qk[:, :, 1].transpose(1, 2), qkv[:, :, 2].transpose(1, 2))
            a = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, is_causal=causal, scale=self.scale)
            x = x + F.linear(a.transpose(1, 2).reshape(batch, steps, -1), o_w)
            h = _rms_norm(x, norm2, self.eps)
            gate, up = F.linear(h, gate_up_w).chunk(2, dim=-1)
            x = x + F.linear(act(gate) * up, down_w)
        h = _rms_norm(x[:, -1], self.norm, self.eps)
        return F.linear(h, self.lm_head).float()


class _T5Decoder:
    """`T5ForConditionalGeneration` with a gated feed-forward layer: the encoder runs once (HF's own
    module), the decoder step by step from `decoder_start_token_id`."""

    def __init__(self, model: T5ForConditionalGeneration, prompt_ids, prompt_mask, *, capacity: int, expand: int):
        config = model.config
        encoded = model.get_encoder()(input_ids=prompt_ids, attention_mask=prompt_mask).last_hidden_state
        if expand > 1:  # as `generate`: the encoder's output repeated, not the encoder's work
            encoded = encoded.repeat_interleave(expand, dim=0)
            prompt_mask = prompt_mask.repeat_interleave(expand, dim=0)
        batch, source_len, _ = encoded.shape
        device = encoded.device
        self.heads, self.head_dim = config.num_heads, config.d_kv
        self.eps = config.layer_norm_epsilon
        decoder = model.decoder
        self.embed = decoder.embed_tokens.weight
        self.layers = []
        for block in decoder.block:
            self_attn, cross, ff = block.layer[0], block.layer[1], block.layer[-1]
            sa, ca, dense = self_attn.SelfAttention, cross.EncDecAttention, ff.DenseReluDense
            kv = F.linear(encoded, torch.cat([ca.k.weight, ca.v.weight]))  # (B, S, 2 * inner)
            kv = kv.view(batch, source_len, 2, self.heads, self.head_dim)
            cross_keys, cross_values = kv[:, :, 0].transpose(1, 2), kv[:, :, 1].transpose(1, 2)  # (B, H, S, hd)
            self.layers.append((
                self_attn.layer_norm.weight, torch.cat([sa.q.weight, sa.k.weight, sa.v.weight]), sa.o.weight,
                cross.layer_norm.weight, ca.q.weight, cross_keys, cross_values, ca.o.weight,
                ff.layer_norm.weight, torch.cat([dense.wi_0.weight, dense.wi_1.weight]), dense.wo.weight,
                dense.act.forward,
            ))
        self.final_norm = decoder.final_layer_norm.weight
        self.lm_head = model.lm_head.weight
        scale = getattr(config, "scale_decoder_outputs", config.tie_word_embeddings)
        self.output_scale = config.d_model ** -0.5 if scale else None
        length = capacity + 1
        self.cache = _KVCache(len(self.layers), batch, self.heads, length, self.head_dim, device)
        # the relative position bias (1, H, query, key) of every step, from the first layer's table, which
        # T5 shares across its layers; no causal mask is needed as a step only sees the keys written so far
        self.position_bias = decoder.block[0].layer[0].SelfAttention.compute_bias(length, length, device=device)
        # cross-attention: zero bias on the prompt's tokens, the dtype's minimum on its pads (as HF does)
        dtype = cross_keys.dtype
        self.cross_mask = torch.where(prompt_mask.bool()[:, None, None, :],
                                      torch.zeros((), dtype=dtype, device=device),
                                      torch.tensor(torch.finfo(dtype).min, dtype=dtype, device=device))
        self.cross_mask = self.cross_mask.expand(batch, self.heads, 1, source_len).contiguous()  # (B, H, 1, S)
        self.length = 0
        start = torch.full((batch,), config.decoder_start_token_id, dtype=torch.long, device=device)
        self.logits = self._step(start)

    @torch.no_grad()
    def advance(self, tokens: torch.Tensor) -> None:
        """Feed the tokens just drawn (B,) and compute the next logits (B, V)."""
        self.logits = self._step(tokens)

    def _step(self, tokens: torch.Tensor) -> torch.Tensor:
        batch = tokens.shape[0]
        heads, head_dim = self.heads, self.head_dim
        t = self.length
        self.length = t + 1
        bias = self.position_bias[:, :, t:t + 1, :t + 1]  # (1, H, 1, t + 1)
        x = F.embedding(tokens, self.embed)  # (B, D)
        for i, (norm1, qkv_w, o_w, norm2, cq_w, ck, cv, co_w, norm3, wi_w, wo_w, act) in enumerate(self.layers):
            h = _rms_norm(x, norm1, self.eps)
            q, k, v = F.linear(h, qkv_w).view(batch, 3, heads, 1, head_dim).unbind(1)  # (B, H, 1, hd) each
            keys, values = self.cache.write(i, t, k, v)
            # T5 does not scale the query-key product
            a = F.scaled_dot_product_attention(q, keys, values, attn_mask=bias, scale=1.0)
            x = x + F.linear(a.reshape(batch, -1), o_w)
            h = _rms_norm(x, norm2, self.eps)
            q = F.linear(h, cq_w).view(batch, heads, 1, head_dim)
            a = F.scaled_dot_product_attention(q, ck, cv, attn_mask=self.cross_mask, scale=1.0)
            x = x + F.linear(a.reshape(batch, -1), co_w)
            h = _rms_norm(x, norm3, self.eps)
            gate, linear = F.linear(h, wi_w).chunk(2, dim=-1)
            x = x + F.linear(act(gate) * linear, wo_w)
        h = _rms_norm(x, self.final_norm, self.eps)
        if self.output_scale is not None:  # tied embeddings: T5 rescales the decoder output
            h = h * self.output_scale
        return F.linear(h, self.lm_head).float()
