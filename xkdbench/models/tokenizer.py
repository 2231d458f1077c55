"""Tokenizers: trained from the task's text with the `tokenizers` library, or loaded from a checkpoint.

The embedded tasks get a byte-level BPE tokenizer trained on their own training text, with digits split
one by one (arithmetic is learnable only if every number is spelled in the same digit tokens). It is
saved as a Transformers fast tokenizer, so teacher, student, the evaluator and lm-eval all load it
with `AutoTokenizer.from_pretrained(dir)`.
"""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from xkdbench.integrity import verify_files
from xkdbench.io import atomic_path

SPECIAL_TOKENS = {"pad_token": "<pad>", "eos_token": "</s>", "unk_token": "<unk>", "bos_token": "<s>"}


def train_tokenizer(texts: Iterable[str], vocab_size: int, *, min_frequency: int = 2) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on `texts`; digits are always single tokens."""
    if vocab_size < 300:
        raise ValueError(f"tokenizer.vocab_size must be >= 300 (256 bytes + specials + merges), got {vocab_size}")
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(texts, trainer)
    # padding_side survives save/reload only when given to the constructor; left padding lets
    # decoder-only models generate from a batch of prompts.
    return PreTrainedTokenizerFast(tokenizer_object=core, padding_side="left", **SPECIAL_TOKENS)


def save_tokenizer(tokenizer, out_dir: str | Path) -> None:
    with atomic_path(out_dir) as tmp:
        tokenizer.save_pretrained(tmp)


def load_tokenizer(name_or_dir: str | Path, *, verify: bool = True):
    """Load a tokenizer from a local directory or a hub id (the paper path uses T5's). A directory this
    suite wrote is verified against its recorded sizes and sha256 first (verify=False: already done)."""
    path = Path(name_or_dir)
    if not path.exists() and (str(name_or_dir).startswith((".", "/")) or path.suffix):
        raise FileNotFoundError(f"tokenizer directory {str(name_or_dir)!r} does not exist")
    if verify and path.is_dir():
        verify_files(path)
    tokenizer = AutoTokenizer.from_pretrained(str(name_or_dir))
    if tokenizer.pad_token_id is None:
        raise ValueError(f"tokenizer {str(name_or_dir)!r} has no pad token; the suite needs one")
    tokenizer.padding_side = "left"
    return tokenizer
