"""Describe the embedded tasks' difficulty levels: examples, lengths and the number of valid outputs.

    python -m xkdbench.tasks.levels [--n 300] [--examples 2]

Lengths are in whitespace tokens and characters of the prompt and the target. The number of valid
outputs per input is counted exactly from the grammar (the median over sampled inputs), not estimated
from samples.
"""
from __future__ import annotations

import argparse
import random
from statistics import mean, median

from xkdbench.tasks import get_task
from xkdbench.tasks.reasoning import ReasoningGenerator, count_valid_answers
from xkdbench.tasks.summarization import SummaryGenerator, count_valid_summaries
from xkdbench.tasks.translation import TranslationGenerator, count_valid_translations


def valid_output_counts(name: str, difficulty: int, n: int = 300) -> list[int]:
    counts = []
    for i in range(n):
        rng = random.Random(f"levels/{name}/{difficulty}/{i}")
        if name == "summarization":
            counts.append(count_valid_summaries(SummaryGenerator(difficulty).sample(rng)[0]))
        elif name == "translation":
            counts.append(count_valid_translations(TranslationGenerator(difficulty).sample(rng)))
        else:
            counts.append(count_valid_answers(ReasoningGenerator(difficulty).sample(rng)))
    return counts


def level_stats(name: str, difficulty: int, n: int = 300) -> dict:
    task = get_task(name, difficulty=difficulty, sizes={"train": n, "warmup": 1, "validation": 1, "test": 1})
    records = task.load("train").to_list()
    prompts = [task.prompt(r) for r in records]
    targets = [task.target(r) for r in records]
    counts = valid_output_counts(name, difficulty, n)
    return {
        "task": name, "difficulty": difficulty,
        "prompt_words": mean(len(p.split()) for p in prompts), "prompt_chars": mean(len(p) for p in prompts),
        "target_words": mean(len(t.split()) for t in targets), "target_chars": mean(len(t) for t in targets),
        "max_prompt_words": max(len(p.split()) for p in prompts), "max_target_words": max(len(t.split()) for t in targets),
        "valid_outputs_median": median(counts), "valid_outputs_min": min(counts), "valid_outputs_max": max(counts),
        "examples": list(zip(prompts, targets, strict=True)),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=300, help="records per level to measure")
    parser.add_argument("--examples", type=int, default=2, help="examples to print per level")
    args = parser.parse_args(argv)
    for name in ("summarization", "translation", "reasoning"):
        for difficulty in range(4):
            s = level_stats(name, difficulty, args.n)
            print(f"== {name} difficulty {difficulty}: prompt {s['prompt_words']:.1f} words / "
                  f"{s['prompt_chars']:.0f} chars (max {s['max_prompt_words']} words), target "
                  f"{s['target_words']:.1f} words / {s['target_chars']:.0f} chars (max {s['max_target_words']}), "
                  f"valid outputs per input: median {s['valid_outputs_median']:g} "
                  f"(min {s['valid_outputs_min']}, max {s['valid_outputs_max']})")
            for prompt, target in s["examples"][: args.examples]:
                print(f"   PROMPT: {prompt}")
                print("   TARGET: " + target.replace("\n", "\n           "))


if __name__ == "__main__":
    main()
