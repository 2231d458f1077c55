"""Every task as an lm-eval task, so any checkpoint can be scored by lm-eval itself.

`export_task` writes, into one directory: the test inputs as JSONL with the exact prompt text the
suite feeds the model (separator token included) and the gold target, a task YAML over that file
(absolute path: lm-eval resolves relative `data_files` against the working directory, not the
YAML), and for summarization a `process_results` module calling rouge-score (lm-eval has no
built-in ROUGE; an unknown metric name would fall back to `evaluate.load`, which needs the network).
`run_lm_eval` then calls `lm_eval.simple_evaluate` offline on a checkpoint directory.
"""
from __future__ import annotations

from pathlib import Path

import yaml

from xkdbench.io import write_jsonl, write_text

GSM8K_FILTERS = [
    {"name": "strict-match", "filter": [{"function": "regex", "regex_pattern": r"#### (\-?[0-9\.\,]+)"},
                                         {"function": "take_first"}]},
    {"name": "flexible-extract", "filter": [{"function": "regex", "group_select": -1,
                                             "regex_pattern": r"(-?[$0-9.,]{2,})|(-?[0-9]+)"},
                                            {"function": "take_first"}]},
]
GSM8K_EXACT_MATCH = {"metric": "exact_match", "aggregation": "mean", "higher_is_better": True, "ignore_case": True,
                     "ignore_punctuation": False, "regexes_to_ignore": [",", r"\$", "(?s).*#### ", r"\.$"]}

ROUGE_MODULE = '''"""process_results for the xkdbench summarization task: ROUGE through rouge-score, as the suite does."""
from xkdbench.tasks.metrics import ROUGE_TYPES, rouge


def process_results(doc, results):
    scores = rouge([results[0].strip()], [doc["target"]])
    return {name: scores[name] for name in ROUGE_TYPES}
'''

# how lm-eval's own names map to the suite's metric names
LM_EVAL_METRICS = {
    "summarization": {"rouge1,none": "rouge1", "rouge2,none": "rouge2", "rougeL,none": "rougeL"},
    "translation": {"bleu,none": "bleu", "chrf,none": "chrf"},
    "reasoning": {"exact_match,strict-match": "accuracy_strict", "exact_match,flexible-extract": "accuracy_flexible"},
}


def lm_eval_task_name(task_name: str) -> str:
    return f"xkdbench_{task_name}"


def export_task(task, model, examples: list[dict], out_dir: str | Path, *, max_new_tokens: int) -> str:
    """Write the lm-eval task for `examples` of `task` as `model` sees them; returns the task name."""
    out_dir = Path(out_dir).resolve()
    name = lm_eval_task_name(task.name)
    data = out_dir / f"{name}.jsonl"
    suffix = _separator_text(model, task.prompt(examples[0]))
    write_jsonl(data, ({"prompt": task.prompt(ex) + suffix, "target": task.target(ex)} for ex in examples))
    spec = {
        "task": name,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(data)}},  # the dict form names the split
        "test_split": "test",
        "output_type": "generate_until",
        "doc_to_text": "{{prompt}}",
        "doc_to_target": "{{target}}",
        "target_delimiter": "",
        "generation_kwargs": {"until": [model.tokenizer.eos_token], "do_sample": False, "max_gen_toks": max_new_tokens},
        "num_fewshot": 0,
        "metadata": {"version": 1.0},
    }
    if task.name == "summarization":
        write_text(out_dir / "xkdbench_rouge.py", ROUGE_MODULE)
        spec["process_results"] = "!function xkdbench_rouge.process_results"
        spec["metric_list"] = [{"metric": m, "aggregation": "mean", "higher_is_better": True}
                               for m in ("rouge1", "rouge2", "rougeL")]
    elif task.name == "translation":
        spec["metric_list"] = [{"metric": m, "higher_is_better": True} for m in ("bleu", "chrf")]
    else:
        spec["metric_list"] = [GSM8K_EXACT_MATCH]
        spec["filter_list"] = GSM8K_FILTERS
    text = yaml.safe_dump(spec, sort_keys=False, allow_unicode=True)
    # `!function` is a YAML tag lm-eval resolves; safe_dump would quote it as a string
    text = text.replace("'!function xkdbench_rouge.process_results'", "!function xkdbench_rouge.process_results")
    write_text(out_dir / f"{name}.yaml", text)
    return name


def _separator_text(model, prompt: str) -> str:
    """The text to append so lm-eval's tokenisation of the prompt ends like the suite's prompt ids
    (a tokenizer that appends EOS itself, like T5's, gets nothing added)."""
    ids = model.tokenizer(prompt).input_ids
    if ids and ids[-1] == model.separator_id:
        return ""
    return model.tokenizer.convert_ids_to_tokens(model.separator_id)


def run_lm_eval(checkpoint: str | Path, task_dir: str | Path, task_name: str, *, family: str, batch_size: int,
                device: str = "cpu", limit: int | None = None) -> dict:
    """Evaluate a checkpoint with lm-eval on an exported task; returns the suite's metric names -> values
    plus lm-eval's per-example responses under "responses"."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    results = lm_eval.simple_evaluate(
        model="hf",
        model_args={"pretrained": str(checkpoint), "backend": "seq2seq" if family == "t5" else "causal",
                    "dtype": "float32", "device": device},
        tasks=[task_name], task_manager=TaskManager(include_path=str(Path(task_dir).resolve())),
        batch_size=batch_size, limit=limit, log_samples=True,
    )
    raw = results["results"][task_name]
    base = task_name.removeprefix("xkdbench_")
    out = {ours: float(raw[theirs]) for theirs, ours in LM_EVAL_METRICS[base].items() if theirs in raw}
    # one sample record per document and filter (GSM8K has two filters): keep one per document
    by_doc = {s["doc_id"]: s["resps"][0][0] for s in results["samples"][task_name]}
    out["responses"] = [by_doc[i] for i in sorted(by_doc)]
    return out
