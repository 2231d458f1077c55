"""Milliseconds per batch of on-policy sampling: Hugging Face `generate` against the lean decoder.

Builds the default student and teacher (sizes of workflows/config/default.yaml, fresh weights, a
1000-token vocabulary) in both families, and samples `--new-tokens` tokens for `--batch` left-padded
prompts of 8-24 tokens with each decoder in turn, as `TrainContext.sample_student` does (temperature
1, whole distribution). Prints the median of `--repeats` timed batches after `--warmup` untimed ones,
tokens per second, the speed-up, and whether both decoders drew the same tokens under the same seed.

    python benchmarks/sampling_speed.py              # one thread, 16 prompts x 50 new tokens
    python benchmarks/sampling_speed.py --greedy     # greedy decoding, as evaluation does

The times are wall-clock: run it on an otherwise idle machine (the two decoders alternate, so load from
other processes slows both, but not necessarily by the same factor).
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from xkdbench.models import ModelSpec, build_model

SIZES = {  # the default config's models
    "student": ModelSpec(d_model=64, n_layers=2, n_heads=2, d_ff=256),
    "teacher": ModelSpec(d_model=128, n_layers=4, n_heads=4, d_ff=512),
}


class Vocabulary:
    """What building a model needs of a tokenizer: its size and special ids (the suite's order)."""

    pad_token_id, eos_token_id, bos_token_id = 0, 1, 3

    def __init__(self, size: int):
        self.size = size

    def __len__(self) -> int:
        return self.size


def timed(model, batch, args, seed: int):
    torch.manual_seed(seed)
    started = time.perf_counter()
    out = model.generate(batch, max_new_tokens=args.new_tokens, do_sample=not args.greedy)
    return time.perf_counter() - started, out.target_ids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=50)
    parser.add_argument("--vocab", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--greedy", action="store_true", help="greedy decoding instead of sampling")
    parser.add_argument("--families", nargs="+", default=["llama", "t5"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    vocabulary = Vocabulary(args.vocab)
    rng = torch.Generator().manual_seed(0)
    lengths = torch.randint(8, 25, (args.batch,), generator=rng).tolist()
    rows = [torch.randint(4, args.vocab, (n,), generator=rng).tolist() for n in lengths]
    mode = "greedy" if args.greedy else "sampled"
    print(f"{mode}: {args.batch} prompts x {args.new_tokens} new tokens, vocabulary {args.vocab}, "
          f"threads {torch.get_num_threads()}, median of {args.repeats}")
    print(f"{'model':16s} {'hf ms':>8s} {'lean ms':>8s} {'hf tok/s':>9s} {'lean tok/s':>10s} {'speed-up':>8s}  same tokens")
    for family in args.families:
        for role, spec in SIZES.items():
            model = build_model(ModelSpec(**{**vars(spec), "family": family}), vocabulary, seed=0)
            batch = model.collate(rows, [[] for _ in rows])
            seconds = {"hf": [], "lean": []}
            tokens = {}
            for i in range(args.warmup + args.repeats):
                for decoder in ("hf", "lean"):  # alternating, so slow phases of the machine hit both
                    model.decoder = decoder
                    elapsed, tokens[decoder] = timed(model, batch, args, seed=i)
                    if i >= args.warmup:
                        seconds[decoder].append(elapsed)
            hf, lean = (statistics.median(seconds[d]) for d in ("hf", "lean"))
            per_batch = tokens["lean"].numel()  # decoding steps x rows (every row runs every step)
            same = torch.equal(tokens["hf"], tokens["lean"])
            print(f"{family + ' ' + role:16s} {hf * 1e3:8.1f} {lean * 1e3:8.1f} {per_batch / hf:9.0f} "
                  f"{per_batch / lean:10.0f} {hf / lean:7.2f}x  {'yes' if same else 'NO'}")


if __name__ == "__main__":
    main()
