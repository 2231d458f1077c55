"""Device, precision and seeding: the only place that knows whether we run on CPU or CUDA."""
from __future__ import annotations

import hashlib
import os
import random
from contextlib import contextmanager

import numpy as np
import torch


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device: 'cuda' was asked for but no CUDA device is available; use 'auto' or 'cpu'")
    return torch.device(name)


def use_bf16(precision: str, device: torch.device) -> bool:
    """bf16 autocast: 'auto' turns it on for CUDA only; fp16 is never used (unusable on CPU)."""
    if precision == "bf16":
        return True
    return precision == "auto" and device.type == "cuda"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def stream_seed(seed: int, name: str, offset: int = 0) -> int:
    """The seed of one named consumer of randomness in a run of `seed`.

    Every consumer (data order, on-policy sampling, method modules' initialisation, per-step
    decisions) draws from a generator seeded by its own name, so adding a consumer, or a module that
    draws at construction, shifts no other stream. `offset` is the variant's stream offset: two
    variants that differ only in it draw independent samples (the A/A control)."""
    digest = hashlib.sha256(f"{seed}/{offset}/{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1  # 63 bits: valid for torch and random


@contextmanager
def torch_stream(seed: int, device: torch.device):
    """Run the block on torch's global generator seeded with `seed`, then restore the outer state.

    For code that draws from the global generator and takes no generator argument (Hugging Face
    `generate`, module initialisation): the block's draws are a function of `seed` alone, and the
    stream outside it is left exactly as it was."""
    devices = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def set_threads(threads: int | None) -> None:
    """Honour the thread count a workflow rule grants (otherwise torch takes every core)."""
    if threads:
        torch.set_num_threads(threads)
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
