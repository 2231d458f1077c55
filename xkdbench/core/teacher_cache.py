"""The teacher's token distributions on every fixed training sequence, computed once per task.

Off-policy cells (supervised KD, token divergences, GKD's fixed-data steps, DistiLLM's gold steps,
Bellman Distill's teacher nucleus) ask the teacher about the same sequences at every step, in every
seed and variant: the gold targets of the train split and SeqKD's cached teacher outputs. The cache
holds the answers, computed once per task; `TrainContext.teacher_logits` serves every row it finds
there and sends the others (on-policy samples) to the live teacher, which alone counts as a teacher
forward pass.

Keying. A row is keyed by its content: a hash of its unpadded prompt tokens and unpadded target
tokens. So a cached row is found whatever batch it sits in, in whatever order, and however far the
batch is padded (Bellman Distill appends a padding column to every batch). A generated sequence that
happens to equal a fixed one is served from the cache too: it is the same sequence.

Storage (one directory per task). `keys.npy` (N, 16) row keys and `offsets.npy` (N + 1) row starts:
row r covers positions offsets[r]..offsets[r+1] (its target tokens, EOS included) of the per-position
arrays. In `top_k` mode: `token_ids.npy` (P, k) int16 when the vocabulary fits (int32 otherwise),
`logprobs.npy` (P, k) float16 and `tail_logmass.npy` (P,) float32, the log of the probability mass
left outside the top k (computed by logsumexp, so a mass of 1e-40 is still finite). float16 rather than
bfloat16: log-probabilities need precision, not range (they lie in [-65504, 0] in practice), and
float16 keeps 11 significant bits to bfloat16's 8 (an error of at most 2^-11 relative in a
log-probability, 2^-8 in bfloat16); numpy also stores and maps float16 natively. In `exact` mode:
`logprobs.npy` (P, V) float32 in vocabulary order, nothing else. `manifest.json` is written last.
Reading (`TeacherCache.log_probs`): the stored entries, the dropped mass spread evenly over the other
tokens; `top_k_error` measures what that costs.

Integrity. The manifest records fingerprints of the teacher weights, the tokenizer, the training
data and the teacher outputs it was built from, the mode, k, dtypes, row and position counts, and the
byte size and sha256 of every array file. `TeacherCache.open` refuses a cache whose fingerprints differ
from the run's, a file whose size or hash differs from the manifest (truncated, corrupted), or a
directory without a manifest (an interrupted build); the build writes into a temporary directory
renamed into place only when complete.
"""
from __future__ import annotations

import hashlib
import json
import math
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch

from xkdbench.errors import ConfigError
from xkdbench.integrity import verify_files
from xkdbench.io import atomic_path, provenance, read_json, write_json
from xkdbench.models.batch import Batch
from xkdbench.progress import Progress

FORMAT = 1
MANIFEST = "manifest.json"
KEY_BYTES = 16
# what the manifest's fingerprints mean; `open` compares each with the run's own
IDENTITY = {"teacher": "teacher weights", "tokenizer": "tokenizer", "data": "training data",
            "max_prompt_tokens": "max_prompt_tokens", "max_target_tokens": "max_target_tokens"}


class TeacherCacheError(ConfigError):
    """A teacher cache that does not belong to this run, or is damaged; fixed by rebuilding it."""


# -- which cells use it ---------------------------------------------------------------------------
def variant_uses_cache(cfg, entry) -> bool:
    """Whether the cells of method variant `entry` read the teacher cache: it is on in the study `cfg`,
    and the method asks the teacher about fixed training sequences (Method.teacher_sequences). An external
    variant (a rule of its own) never reads it."""
    from xkdbench.methods import FIXED, METHODS, method_config

    if entry.external:
        return False
    settings = method_config(entry.method, entry.settings)
    return cfg.teacher_cache.enabled and FIXED in METHODS.get(entry.method).teacher_sequences(settings)


def cache_plan(cfg) -> dict[str, dict[str, bool]]:
    """{task: {"teacher_outputs": bool}} for every task with a variant that reads the cache. The cache of a
    task holds the SeqKD teacher outputs too when a variant on that task trains on them."""
    from xkdbench.methods import METHODS, method_config

    plan = {}
    for task in cfg.tasks:
        entries = [e for e in cfg.methods if e.runs_on(task) and not e.external]
        if any(variant_uses_cache(cfg, e) for e in entries):
            plan[task] = {"teacher_outputs": any(
                METHODS.get(e.method).uses_teacher_outputs(method_config(e.method, e.settings)) for e in entries)}
    return plan


# -- keys -----------------------------------------------------------------------------------------
def row_key(prompt: list[int], target: list[int]) -> bytes:
    """The key of one (prompt, target) row: a hash of both token lists, unpadded (the prompt's length
    is hashed too, so no split of the same tokens into prompt and target collides)."""
    tokens = np.asarray([len(prompt), *prompt, *target], dtype=np.int64)
    return hashlib.blake2b(tokens.tobytes(), digest_size=KEY_BYTES).digest()


def batch_rows(batch: Batch) -> list[tuple[list[int], list[int]]]:
    """The batch's rows as (prompt tokens, target tokens), padding removed."""
    rows = []
    for ids, mask, target, target_mask in zip(batch.prompt_ids.tolist(), batch.prompt_mask.tolist(),
                                              batch.target_ids.tolist(), batch.target_mask.tolist(), strict=True):
        rows.append(([t for t, m in zip(ids, mask, strict=True) if m],
                     [t for t, m in zip(target, target_mask, strict=True) if m]))
    return rows


# -- fingerprints ---------------------------------------------------------------------------------
def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def token_id_dtype(vocab: int) -> type:
    """The narrowest integer type the cache can store a vocabulary's token ids in (ids 0..vocab-1)."""
    return np.int16 if vocab - 1 <= np.iinfo(np.int16).max else np.int32


def teacher_fingerprint(model_dir: str | Path) -> str:
    """sha256 over the weight files (safetensors or PyTorch bins) and config.json of a model directory.
    A directory with a manifest of its files is verified first: a damaged teacher is named as such, not
    taken for another teacher."""
    model_dir = Path(model_dir)
    verify_files(model_dir)
    files = sorted(p for p in model_dir.iterdir()
                   if p.suffix == ".safetensors" or (p.suffix == ".bin" and p.name.startswith("pytorch_model"))
                   or p.name == "config.json")
    if not any(p.name != "config.json" for p in files):
        raise FileNotFoundError(f"{model_dir}: no weight files (*.safetensors, pytorch_model*.bin) to fingerprint")
    digest = hashlib.sha256()
    for path in files:
        digest.update(f"{path.name}:{file_sha256(path)}\n".encode())
    return digest.hexdigest()


def tokenizer_fingerprint(tokenizer) -> str:
    """sha256 of what token ids mean: the vocabulary and the special tokens' ids (independent of how
    the tokenizer files are formatted)."""
    content = {"vocab": sorted(tokenizer.get_vocab().items(), key=lambda item: item[1]),
               "special": [tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.bos_token_id]}
    return hashlib.sha256(json.dumps(content).encode()).hexdigest()


# -- building -------------------------------------------------------------------------------------
def build_teacher_cache(teacher, rows: list[tuple[list[int], list[int]]], out_dir: str | Path, *,
                        top_k: int | None, batch_size: int, device: torch.device, use_bf16: bool,
                        identity: dict[str, Any]) -> dict:
    """Run the teacher once over `rows` (deduplicated) and write the cache to out_dir; returns the manifest.

    top_k: tokens kept per position, or None for the exact mode. identity: the fingerprints `open`
    compares (IDENTITY's keys, plus `teacher_outputs`, the sha256 of the outputs file or None).
    The teacher runs as in training: eval mode, bf16 autocast when asked for.
    """
    unique: dict[bytes, tuple[list[int], list[int]]] = {}
    for prompt, target in rows:
        unique.setdefault(row_key(prompt, target), (prompt, target))
    keys, rows = list(unique), list(unique.values())
    lengths = np.asarray([len(target) for _, target in rows], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    vocab = int(teacher.model.get_output_embeddings().out_features)
    if top_k is not None and top_k >= vocab:
        raise ConfigError(f"teacher_cache.top_k: {top_k} keeps the whole vocabulary ({vocab} tokens); "
                          f"allowed: 1..{vocab - 1}, or mode: exact")
    positions = int(offsets[-1])
    started = time.perf_counter()
    teacher.model.to(device).eval().requires_grad_(False)
    autocast = (lambda: torch.autocast(device_type=device.type, dtype=torch.bfloat16)) if use_bf16 else nullcontext
    out_dir = Path(out_dir)
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        np.save(tmp / "keys.npy", np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(len(keys), KEY_BYTES))
        np.save(tmp / "offsets.npy", offsets)
        open_memmap = np.lib.format.open_memmap
        if top_k is None:
            arrays = {"logprobs": open_memmap(tmp / "logprobs.npy", "w+", np.float32, (positions, vocab))}
        else:
            id_dtype = token_id_dtype(vocab)
            arrays = {"token_ids": open_memmap(tmp / "token_ids.npy", "w+", id_dtype, (positions, top_k)),
                      "logprobs": open_memmap(tmp / "logprobs.npy", "w+", np.float16, (positions, top_k)),
                      "tail_logmass": open_memmap(tmp / "tail_logmass.npy", "w+", np.float32, (positions,))}
        order = sorted(range(len(rows)), key=lambda r: (len(rows[r][0]), len(rows[r][1])))  # less padding
        progress = Progress("teacher-cache", len(order), unit="sequence")
        for start in range(0, len(order), batch_size):
            if progress.due():
                progress.update(start)
            chunk = order[start:start + batch_size]
            batch = teacher.collate([rows[r][0] for r in chunk], [rows[r][1] for r in chunk]).to(device)
            with torch.no_grad(), autocast():
                logits = teacher.target_logits(batch)
            if logits.shape[-1] != vocab:
                raise RuntimeError(f"the teacher's logits have {logits.shape[-1]} entries, its output layer {vocab}")
            logp = torch.log_softmax(logits.float(), dim=-1)  # (B, T, V)
            if top_k is None:
                results = {"logprobs": logp}
            else:
                values, ids = logp.topk(top_k, dim=-1)  # (B, T, k), most probable first
                tail = logp.scatter(-1, ids, float("-inf")).logsumexp(dim=-1)  # (B, T), log of the rest's mass
                results = {"token_ids": ids, "logprobs": values, "tail_logmass": tail}
            results = {name: value.cpu().numpy() for name, value in results.items()}  # one copy per batch
            for b, r in enumerate(chunk):
                s, e = int(offsets[r]), int(offsets[r + 1])
                for name, value in results.items():
                    arrays[name][s:e] = value[b, :e - s]
        progress.update(len(order))
        for array in arrays.values():
            array.flush()
        del arrays
        files = {}
        for path in sorted(tmp.glob("*.npy")):
            files[path.name] = {"bytes": path.stat().st_size, "sha256": file_sha256(path)}
        manifest = {
            "format": FORMAT, "mode": "exact" if top_k is None else "top_k", "top_k": vocab if top_k is None else top_k,
            "vocab_size": vocab, "logprob_dtype": "float32" if top_k is None else "float16",
            "token_id_dtype": None if top_k is None else np.dtype(id_dtype).name,
            "rows": len(rows), "positions": positions, "precision": "bf16" if use_bf16 else "fp32",
            **identity, "files": files, "seconds": round(time.perf_counter() - started, 3),
            "bytes_per_position": sum(f["bytes"] for f in files.values()) / max(1, positions),
            "created_by": provenance(),
        }
        write_json(tmp / MANIFEST, manifest)  # last: a directory without it is an unfinished build
    return manifest


# -- reading --------------------------------------------------------------------------------------
class TeacherCache:
    """A verified cache, read through memory maps. See the module docstring for the layout."""

    def __init__(self, directory: Path, manifest: dict):
        self.directory, self.manifest = directory, manifest
        self.vocab_size, self.exact = manifest["vocab_size"], manifest["mode"] == "exact"
        self.top_k = manifest["top_k"]
        load = lambda name: np.load(directory / name, mmap_mode="r")  # noqa: E731
        self.offsets = np.load(directory / "offsets.npy")
        self.logprobs = load("logprobs.npy")
        if not self.exact:
            self.token_ids, self.tail_logmass = load("token_ids.npy"), load("tail_logmass.npy")
        keys = np.load(directory / "keys.npy")
        self.index = {bytes(key): r for r, key in enumerate(keys)}

    @classmethod
    def open(cls, directory: str | Path, *, expect: dict[str, Any], mode: str, top_k: int,
             where: str = "--teacher-cache") -> TeacherCache:
        """Open and verify a cache: its build finished, every file is whole and unchanged, and it was built
        from what `expect` fingerprints (IDENTITY's keys; `teacher_outputs` when the run reads them) in the
        configured mode and k. Anything else raises TeacherCacheError saying what differs."""
        directory = Path(directory)
        rebuild = (f"rebuild it with `xkdbench teacher-cache` (in the workflow: rerun snakemake with "
                   f"`--forcerun {directory / MANIFEST}`)")
        if not (directory / MANIFEST).is_file():
            raise TeacherCacheError(f"{where}: {directory} has no {MANIFEST} (no cache, or an interrupted build); "
                                    f"{rebuild}")
        try:
            manifest = read_json(directory / MANIFEST)
            manifest["files"], manifest["mode"], manifest["top_k"]  # noqa: B018 (present, or damaged)
        except (ValueError, KeyError, TypeError):
            raise TeacherCacheError(f"{where}: {directory / MANIFEST} is damaged (truncated or overwritten: not the "
                                    f"manifest the build wrote); {rebuild}") from None
        if manifest.get("format") != FORMAT:
            raise TeacherCacheError(f"{where}: {directory} is in format {manifest.get('format')!r}, this version "
                                    f"reads {FORMAT}; {rebuild}")
        built = f"top_k {manifest['top_k']}" if manifest["mode"] == "top_k" else manifest["mode"]
        wanted = f"top_k {top_k}" if mode == "top_k" else mode
        if built != wanted:
            raise TeacherCacheError(f"{where}: the cache was built in mode {built}, the config's teacher_cache asks "
                                    f"for {wanted}; {rebuild}")
        for key, value in expect.items():
            if key == "teacher_outputs" and value is not None and manifest.get(key) is None:
                continue  # a cache without teacher outputs serves gold rows; `check_covers` names what is missing
            if manifest.get(key) != value:
                what = IDENTITY.get(key, "teacher outputs")
                raise TeacherCacheError(f"{where}: the cache was built from other {what} than this run's "
                                        f"({key}: cache {str(manifest.get(key))[:16]}, run {str(value)[:16]}); "
                                        f"{rebuild} from the run's inputs")
        expected_files = {"keys.npy", "offsets.npy", "logprobs.npy"}
        if manifest["mode"] == "top_k":
            expected_files |= {"token_ids.npy", "tail_logmass.npy"}
        if set(manifest["files"]) != expected_files:
            raise TeacherCacheError(f"{where}: the manifest lists {sorted(manifest['files'])}, a {manifest['mode']} "
                                    f"cache has {sorted(expected_files)}; {rebuild}")
        for name, info in manifest["files"].items():
            path = directory / name
            if not path.is_file():
                raise TeacherCacheError(f"{where}: {path} is missing; {rebuild}")
            size = path.stat().st_size
            if size != info["bytes"]:
                raise TeacherCacheError(f"{where}: {path} has {size} bytes, the manifest says {info['bytes']} "
                                        f"(truncated or overwritten); {rebuild}")
            if file_sha256(path) != info["sha256"]:
                raise TeacherCacheError(f"{where}: {path} is corrupted (its sha256 differs from the manifest's); "
                                        f"{rebuild}")
        return cls(directory, manifest)

    def __len__(self) -> int:
        return len(self.index)

    def find(self, batch: Batch) -> list[int | None]:
        """The cache row of each batch row (None where the row is not cached)."""
        return [self.index.get(row_key(prompt, target)) for prompt, target in batch_rows(batch)]

    def check_covers(self, prompts: list[list[int]], targets: list[list[int]], what: str) -> None:
        """Raise TeacherCacheError unless every (prompt, target) row is cached."""
        missing = [i for i, (p, t) in enumerate(zip(prompts, targets, strict=True))
                   if row_key(p, t) not in self.index]
        if missing:
            raise TeacherCacheError(
                f"--teacher-cache: {len(missing)} of the run's {len(prompts)} {what} are not in the cache "
                f"(first: training example {missing[0]}); it was built from other data, other sequence limits"
                f"{' or without --teacher-outputs' if what == 'teacher outputs' else ''}; rebuild it with "
                "`xkdbench teacher-cache` from the run's inputs")

    def log_probs(self, rows: list[int | None], width: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """Dense teacher log-probabilities (B, width, V) in float32 for cache rows `rows`.

        Top-k mode: the k stored entries as they are, the remaining mass m spread uniformly over the
        other V - k tokens (log(m / (V - k)) each). Uniform is the maximum-entropy completion: it adds no
        preference the teacher did not state, keeps every token's probability positive (a reverse KL
        stays finite), puts exactly the dropped mass outside the top k, and is within total variation m
        of the true distribution. Exact mode: the stored log-probabilities.

        Temperature: every loss applies log_softmax(x / T) to what it is given. In exact mode that equals
        log_softmax(logits / T), because log-probabilities differ from logits by a per-position constant.
        In top-k mode it tempers the reconstruction, whose tail is flat: at T > 1 the flat tail gains mass
        as the true tail would, but its shape stays flat; the error is the tail approximation's, and it
        grows with the dropped mass (README, "Teacher cache").

        Positions beyond a row's end (padding, Bellman Distill's extra column) and rows that are None hold
        the uniform distribution: finite, so every loss masked there stays exactly unchanged (0 times a
        finite number), whatever reads them.
        """
        vocab, batch = self.vocab_size, len(rows)
        filler = -math.log(vocab)
        spans = [(b, int(self.offsets[r]), int(self.offsets[r + 1])) for b, r in enumerate(rows) if r is not None]
        if self.exact:
            out = np.full((batch, width, vocab), filler, dtype=np.float32)
            for b, s, e in spans:
                out[b, :e - s] = self.logprobs[s:e]
            return torch.from_numpy(out).to(device)
        k = self.top_k
        ids = np.broadcast_to(np.arange(k), (batch, width, k)).copy()  # filler rows: any k distinct tokens
        values = np.full((batch, width, k), filler, dtype=np.float32)
        tail = np.full((batch, width), filler, dtype=np.float32)
        log_others = math.log(vocab - k)
        for b, s, e in spans:
            ids[b, :e - s] = self.token_ids[s:e]
            values[b, :e - s] = self.logprobs[s:e]
            tail[b, :e - s] = self.tail_logmass[s:e] - log_others
        tail_t = torch.from_numpy(tail).to(device)
        out = tail_t.unsqueeze(-1).expand(batch, width, vocab).contiguous()
        return out.scatter_(-1, torch.from_numpy(ids).to(device), torch.from_numpy(values).to(device))


def top_k_error(exact: torch.Tensor, top_k: int) -> dict[str, torch.Tensor]:
    """What keeping the top k of exact log-probabilities (..., V) costs, per position (...): the dropped
    mass m, the total variation and KL(exact || reconstructed) of the uniform-tail reconstruction (in
    float32 or float64, before the float16 rounding of storage). TV <= m always (the tail's mass is moved,
    not lost)."""
    exact = exact.to(torch.promote_types(exact.dtype, torch.float32))
    values, ids = exact.topk(top_k, dim=-1)
    tail = exact.scatter(-1, ids, float("-inf")).logsumexp(dim=-1)  # log m
    vocab = exact.shape[-1]
    recon = (tail - math.log(vocab - top_k)).unsqueeze(-1).expand_as(exact).scatter(-1, ids, values)
    p, q = exact.exp(), recon.exp()
    kl = torch.where(p > 0, p * (exact - recon), torch.zeros_like(p)).sum(-1)
    return {"dropped_mass": tail.exp(), "total_variation": 0.5 * (p - q).abs().sum(-1), "kl": kl}
