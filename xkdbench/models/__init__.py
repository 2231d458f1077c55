"""Tokenizers and models: built from a size config with no download, or loaded from a checkpoint."""
from xkdbench.models.batch import Batch
from xkdbench.models.build import ModelSpec, build_model
from xkdbench.models.seq2seq import FAMILIES, Seq2SeqLM, load_model
from xkdbench.models.tokenizer import load_tokenizer, save_tokenizer, train_tokenizer

__all__ = ["Batch", "FAMILIES", "ModelSpec", "Seq2SeqLM", "build_model", "load_model", "load_tokenizer",
           "save_tokenizer", "train_tokenizer"]
