"""One view of a language model as prompt -> target, for both families the suite supports.

- `t5`: an encoder-decoder (`T5ForConditionalGeneration`), the X-KD paper's family. The prompt ends
  with EOS (T5's convention) and feeds the encoder; the decoder starts from the pad token.
- `llama`: a decoder-only causal LM (`LlamaForCausalLM`). The prompt ends with a BOS separator and the
  target follows it in the same sequence; logits are read from the target positions only.

The rest of the suite calls `target_logits` and `generate` and never asks which family it has.
"""
from __future__ import annotations

import inspect
import json
from contextlib import contextmanager
from functools import cache
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, GenerationConfig

from xkdbench.integrity import verify_files
from xkdbench.io import atomic_path
from xkdbench.models import lean_decode
from xkdbench.models.batch import Batch, mask_after_first_eos, pad_left, pad_right

FAMILIES = ("llama", "t5")
DECODERS = ("lean", "hf")  # how `generate` decodes: xkdbench.models.lean_decode, or Hugging Face
METHOD_FILE = "xkdbench_method.json"


class Seq2SeqLM:
    def __init__(self, model: torch.nn.Module, tokenizer, *, decoder: str = "lean"):
        if decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {', '.join(DECODERS)}, got {decoder!r}")
        self.model = model
        self.decoder = decoder  # see `generate`
        self.tokenizer = tokenizer
        self.is_encoder_decoder = bool(model.config.is_encoder_decoder)
        self.family = "t5" if self.is_encoder_decoder else "llama"
        self.pad_id = tokenizer.pad_token_id
        self.eos_id = tokenizer.eos_token_id
        # decoder-only: a BOS token separates prompt and target (pad when a tokenizer has no BOS)
        sep = tokenizer.eos_token_id if self.is_encoder_decoder else tokenizer.bos_token_id
        self.separator_id = sep if sep is not None else tokenizer.eos_token_id

    # -- encoding --------------------------------------------------------------------------------
    def encode(self, prompts: list[str], targets: list[str] | None, *, max_prompt_tokens: int,
               max_target_tokens: int) -> Batch:
        """Tokenise prompts and (optionally) targets into a Batch on the CPU."""
        prompt_rows = self.encode_prompts(prompts, max_prompt_tokens)
        target_rows = self.encode_targets(targets, max_target_tokens) if targets is not None else [[] for _ in prompts]
        return self.collate(prompt_rows, target_rows)

    def encode_prompt(self, text: str, max_tokens: int) -> list[int]:
        ids = self.tokenizer(text, add_special_tokens=False).input_ids[: max_tokens - 1]
        return ids + [self.separator_id]

    def encode_target(self, text: str, max_tokens: int) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False).input_ids[: max_tokens - 1] + [self.eos_id]

    def encode_prompts(self, texts: list[str], max_tokens: int) -> list[list[int]]:
        """`encode_prompt` of many texts in one tokenizer call (a fast tokenizer encodes them in parallel)."""
        return [ids[: max_tokens - 1] + [self.separator_id] for ids in self._token_ids(texts)]

    def encode_targets(self, texts: list[str], max_tokens: int) -> list[list[int]]:
        """`encode_target` of many texts in one tokenizer call."""
        return [ids[: max_tokens - 1] + [self.eos_id] for ids in self._token_ids(texts)]

    def _token_ids(self, texts: list[str]) -> list[list[int]]:
        return self.tokenizer(list(texts), add_special_tokens=False).input_ids if texts else []

    def collate(self, prompt_rows: list[list[int]], target_rows: list[list[int]]) -> Batch:
        prompt_ids, prompt_mask = pad_left(prompt_rows, self.pad_id)
        target_ids, target_mask = pad_right(target_rows, self.pad_id)
        return Batch(prompt_ids, prompt_mask, target_ids, target_mask)

    def decode(self, target_ids: torch.Tensor, target_mask: torch.Tensor) -> list[str]:
        texts = []
        for ids, mask in zip(target_ids.tolist(), target_mask.tolist(), strict=False):
            kept = [t for t, m in zip(ids, mask, strict=False) if m and t != self.eos_id]
            texts.append(self.tokenizer.decode(kept, skip_special_tokens=True).strip())
        return texts

    # -- forward ---------------------------------------------------------------------------------
    def target_logits(self, batch: Batch, *, with_hidden: bool = False):
        """Logits (B, T, V) predicting batch.target_ids; with_hidden also returns the last hidden state (B, T, H)."""
        if self.is_encoder_decoder:
            start = torch.full_like(batch.target_ids[:, :1], self.model.config.decoder_start_token_id)
            decoder_input = torch.cat([start, batch.target_ids[:, :-1]], dim=1)  # (B, T)
            decoder_mask = torch.cat([torch.ones_like(start), batch.target_mask[:, :-1]], dim=1)
            out = self.model(input_ids=batch.prompt_ids, attention_mask=batch.prompt_mask,
                             decoder_input_ids=decoder_input, decoder_attention_mask=decoder_mask,
                             output_hidden_states=with_hidden, use_cache=False)
            logits = out.logits
            hidden = out.decoder_hidden_states[-1] if with_hidden else None
        else:
            prompt_len = batch.prompt_ids.shape[1]
            input_ids = torch.cat([batch.prompt_ids, batch.target_ids[:, :-1]], dim=1)  # (B, P+T-1)
            attention = torch.cat([batch.prompt_mask, torch.ones_like(batch.target_ids[:, :-1])], dim=1)
            # left padding: positions count real tokens only, as `generate` does
            positions = (attention.cumsum(dim=1) - 1).clamp(min=0)
            # only the last T positions need the output layer (a third of the default student's compute
            # per token); the logits are bit for bit those of the full forward, sliced
            keep = {"logits_to_keep": batch.target_ids.shape[1]} if _keeps_logits(self.model) else {}
            out = self.model(input_ids=input_ids, attention_mask=attention, position_ids=positions,
                             output_hidden_states=with_hidden, use_cache=False, **keep)
            logits = out.logits[:, -batch.target_ids.shape[1]:]  # position P-1+t predicts target token t
            hidden = out.hidden_states[-1][:, prompt_len - 1:] if with_hidden else None
        return (logits, hidden) if with_hidden else logits

    # -- generation ------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, batch: Batch, *, max_new_tokens: int, do_sample: bool, temperature: float = 1.0,
                 top_p: float = 1.0, num_return_sequences: int = 1) -> Batch:
        """Decode targets for the batch's prompts (KV cache, no gradient); returns a Batch whose
        prompts are repeated `num_return_sequences` times and whose targets are masked after the first EOS.

        Sampling uses the whole distribution (top_k 0) with the given temperature and top_p.

        Which decoder runs is `self.decoder` (the constructor's `decoder`, settable): "lean" (the default)
        decodes the models `lean_decode.supports` with `xkdbench.models.lean_decode`, which computes the
        same logits as Hugging Face `generate` (bit for bit on CPU) and so draws the same tokens from
        torch's global generator, 2-3x faster for the default models on one CPU thread; other models fall
        back to `generate`. "hf" always uses Hugging Face `generate`."""
        if self.decoder == "lean" and max_new_tokens >= 1 and lean_decode.supports(self.model):
            with eval_mode(self.model):
                new_tokens = lean_decode.generate(
                    self.model, batch.prompt_ids, batch.prompt_mask, max_new_tokens=max_new_tokens,
                    do_sample=do_sample, temperature=temperature, top_p=top_p,
                    num_return_sequences=num_return_sequences, eos_id=self.eos_id, pad_id=self.pad_id)
            return self._generated(batch, new_tokens, num_return_sequences)
        config = GenerationConfig(
            max_new_tokens=max_new_tokens, do_sample=do_sample,
            temperature=temperature if do_sample else None, top_p=top_p if do_sample else None,
            top_k=0 if do_sample else None,  # sample from the whole distribution (HF's default is 50)
            num_beams=1, num_return_sequences=num_return_sequences, use_cache=True,
            eos_token_id=self.eos_id, pad_token_id=self.pad_id,
            decoder_start_token_id=getattr(self.model.config, "decoder_start_token_id", None),
        )
        with eval_mode(self.model):
            out = self.model.generate(input_ids=batch.prompt_ids, attention_mask=batch.prompt_mask,
                                      generation_config=config)
        new_tokens = out[:, 1:] if self.is_encoder_decoder else out[:, batch.prompt_ids.shape[1]:]
        return self._generated(batch, new_tokens, num_return_sequences)

    def _generated(self, batch: Batch, new_tokens: torch.Tensor, num_return_sequences: int) -> Batch:
        if new_tokens.shape[1] == 0:
            new_tokens = torch.full((new_tokens.shape[0], 1), self.eos_id, dtype=torch.long, device=new_tokens.device)
        target_ids, target_mask = mask_after_first_eos(new_tokens, self.eos_id, self.pad_id)
        repeated = batch.repeat_prompts(num_return_sequences) if num_return_sequences > 1 else batch
        return repeated.with_targets(target_ids, target_mask)

    # -- persistence -----------------------------------------------------------------------------
    def save(self, out_dir: str | Path, extra_modules: dict[str, torch.nn.Module] | None = None,
             method: dict | None = None) -> None:
        """Save model and tokenizer as one Hugging Face directory, atomically; method modules
        (e.g. a reward head) go beside the weights as `<name>.pt` and the method that trained it as
        `xkdbench_method.json`; Hugging Face loaders ignore both."""
        with atomic_path(out_dir) as tmp:
            self.model.save_pretrained(tmp)
            self.tokenizer.save_pretrained(tmp)
            for name, module in (extra_modules or {}).items():
                torch.save(module.state_dict(), tmp / f"{name}.pt")
            if method is not None:
                (tmp / METHOD_FILE).write_text(json.dumps(method, indent=2, default=str) + "\n")

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())


@contextmanager
def eval_mode(model: torch.nn.Module):
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def load_model(name_or_dir: str | Path, tokenizer=None, *, dtype: torch.dtype | None = None) -> Seq2SeqLM:
    """Load a checkpoint directory or hub id with the right Auto class for its family.

    A directory this suite wrote is verified first against the sizes and sha256 recorded with it
    (`xkdbench.integrity`): a truncated or corrupted file raises IntegrityError naming it and the command
    that rebuilds it. A directory without that manifest (a Hugging Face checkpoint) loads unverified."""
    from xkdbench.models.tokenizer import load_tokenizer

    path = Path(name_or_dir)
    if str(name_or_dir).startswith((".", "/")) and not path.exists():
        raise FileNotFoundError(f"model checkpoint {str(name_or_dir)!r} does not exist")
    if path.is_dir():
        verify_files(path)
    config = AutoConfig.from_pretrained(str(name_or_dir))
    auto = AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM
    model = auto.from_pretrained(str(name_or_dir), dtype=dtype or torch.float32)
    return Seq2SeqLM(model, tokenizer if tokenizer is not None else load_tokenizer(name_or_dir, verify=False))


@cache
def _forward_parameters(model_class: type) -> frozenset[str]:
    return frozenset(inspect.signature(model_class.forward).parameters)


def _keeps_logits(model) -> bool:
    """Whether the causal LM's forward takes `logits_to_keep` (transformers' causal LMs since 4.50; a model
    class without it computes every position's logits, which target_logits then slices)."""
    return "logits_to_keep" in _forward_parameters(type(model))
