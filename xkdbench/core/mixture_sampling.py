"""Sampling from a mixture of two models' next-token distributions (MiniLLM's teacher-mixed sampling).

At every decoding step the next token is drawn from

    pi_mix(. | s_t) = w * p(. | s_t) + (1 - w) * q(. | s_t),    s_t = (x, y_<t),

where p is the teacher, q the student and w the teacher weight; both distributions are the softmax of
the models' logits divided by the sampling temperature. The mixture is of PROBABILITIES, so it cannot
be had from `generate` on either model: both models decode in lockstep, each with its own KV cache
(the lean decoder of `xkdbench.models.lean_decode` where `generate` would use it).
Works for both families of `Seq2SeqLM` (encoder-decoder and decoder-only). With w = 0 the teacher is
never run and the draw is exactly the student's (the same operations and random draws as Hugging Face
`generate` with do_sample, top_k 0, top_p 1).
"""
from __future__ import annotations

import inspect
from typing import TYPE_CHECKING

import torch

from xkdbench.models import lean_decode
from xkdbench.models.batch import Batch, mask_after_first_eos
from xkdbench.models.seq2seq import Seq2SeqLM, eval_mode

if TYPE_CHECKING:
    from xkdbench.core.context import TrainContext


class _IncrementalDecoder:
    """One model's next-token logits (B, V) for a growing target, with its KV cache."""

    def __init__(self, lm: Seq2SeqLM, prompts: Batch):
        self.model = lm.model
        self.encoder_decoder = lm.is_encoder_decoder
        # transformers >= 5 names the cache argument `cache`; earlier versions `past_key_values`
        self.cache_arg = "cache" if "cache" in inspect.signature(self.model.forward).parameters else "past_key_values"
        self.mask = prompts.prompt_mask  # (B, P)
        if self.encoder_decoder:
            self.encoded = self.model.get_encoder()(input_ids=prompts.prompt_ids, attention_mask=self.mask)
            start = torch.full_like(prompts.prompt_ids[:, :1], self.model.config.decoder_start_token_id)
            out = self.model(encoder_outputs=self.encoded, attention_mask=self.mask, decoder_input_ids=start,
                             use_cache=True)
        else:
            # left padding: positions count real tokens only, as in `Seq2SeqLM.target_logits`
            positions = (self.mask.cumsum(dim=1) - 1).clamp(min=0)  # (B, P)
            out = self.model(input_ids=prompts.prompt_ids, attention_mask=self.mask, position_ids=positions,
                             use_cache=True)
            self.position = positions[:, -1:]  # (B, 1)
        self._read(out)

    def _read(self, out) -> None:
        self.logits = out.logits[:, -1].float()  # (B, V)
        self.cache = out.get("cache") if out.get("cache") is not None else out.get("past_key_values")

    def advance(self, tokens: torch.Tensor) -> None:
        """Feed the tokens just drawn (B,) and compute the next logits."""
        step = {self.cache_arg: self.cache, "use_cache": True}
        if self.encoder_decoder:
            out = self.model(encoder_outputs=self.encoded, attention_mask=self.mask,
                             decoder_input_ids=tokens[:, None], **step)
        else:
            self.mask = torch.cat([self.mask, torch.ones_like(self.mask[:, :1])], dim=1)
            self.position = self.position + 1
            out = self.model(input_ids=tokens[:, None], attention_mask=self.mask, position_ids=self.position, **step)
        self._read(out)


def _decoder(lm: Seq2SeqLM, prompts: Batch, max_new_tokens: int):
    """The lean decoder when the model's `generate` would use it (the same logits, faster), else HF's modules."""
    if lm.decoder == "lean" and lean_decode.supports(lm.model):
        return lean_decode.decoder_for(lm.model, prompts.prompt_ids, prompts.prompt_mask,
                                       capacity=max_new_tokens - 1)
    return _IncrementalDecoder(lm, prompts)


@torch.no_grad()
def sample_mixture(student: Seq2SeqLM, teacher: Seq2SeqLM | None, prompts: Batch, *, teacher_weight: float,
                   max_new_tokens: int, temperature: float = 1.0) -> Batch:
    """Targets for `prompts` drawn token by token from teacher_weight * p + (1 - teacher_weight) * q.

    No gradient; both models in eval mode; torch's global generator draws the tokens. Finished rows are
    fed pad tokens (as `generate` does) until every row has drawn EOS or max_new_tokens are drawn.
    Returns the prompts with the sampled targets, masked after the first EOS (the EOS kept).
    """
    if not 0.0 <= teacher_weight <= 1.0:
        raise ValueError(f"teacher_weight must be in [0, 1], got {teacher_weight!r}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens!r}")
    if teacher_weight > 0 and teacher is None:
        raise ValueError("a teacher weight > 0 needs a teacher model")
    models = [student] + ([teacher] if teacher_weight > 0 else [])
    pad, eos = student.pad_id, student.eos_id
    with eval_mode(student.model), eval_mode(models[-1].model):
        decoders = [_decoder(m, prompts, max_new_tokens) for m in models]
        unfinished = torch.ones(prompts.size, dtype=torch.bool, device=prompts.prompt_ids.device)
        drawn = []
        for _ in range(max_new_tokens):
            probs = torch.softmax(decoders[0].logits / temperature, dim=-1)  # (B, V) student q
            if teacher_weight > 0:
                teacher_probs = torch.softmax(decoders[1].logits / temperature, dim=-1)  # (B, V) teacher p
                probs = teacher_weight * teacher_probs + (1 - teacher_weight) * probs
            tokens = torch.multinomial(probs, num_samples=1).squeeze(1)  # (B,)
            tokens = torch.where(unfinished, tokens, torch.full_like(tokens, pad))
            drawn.append(tokens)
            unfinished &= tokens != eos
            if not unfinished.any() or len(drawn) == max_new_tokens:
                break
            for decoder in decoders:
                decoder.advance(tokens)
    target_ids, target_mask = mask_after_first_eos(torch.stack(drawn, dim=1), eos, pad)  # (B, T)
    return prompts.with_targets(target_ids, target_mask)


def sample_teacher_mixed(ctx: TrainContext, prompts: Batch, teacher_weight: float) -> Batch:
    """`sample_mixture` with the context's models, length limit, sampling temperature and autocast,
    counting its costs: the generated target tokens, and one teacher sequence per row when the teacher
    decodes alongside the student (as `ctx.sample_teacher` counts)."""
    with ctx.sampling_stream(), ctx.autocast():
        out = sample_mixture(ctx.student, ctx.teacher, prompts, teacher_weight=teacher_weight,
                             max_new_tokens=ctx.max_new_tokens, temperature=ctx.sampling.sampling_temperature)
    ctx.generated_tokens += out.target_mask.sum().cpu()
    if teacher_weight > 0:
        ctx.teacher_forward_sequences += prompts.size
    return out
