"""The ``hf`` source: real datasets through ``datasets.load_dataset``.

One call serves the hub and local copies alike::

    datasets.load_dataset(dataset_path, dataset_name, revision=revision)

where ``dataset_path`` is a hub id (``EdinburghNLP/xsum``, ``wmt/wmt14`` with name ``de-en``,
``openai/gsm8k`` with name ``main``) or a local directory laid out like the hub repository (the tests
use such directories under ``tests/fixtures/hf``). Set ``HF_DATASETS_OFFLINE=1`` to forbid network
access; a dataset repository that still holds a loading script (``datasets`` >= 4 refuses those) is
read from its parquet export with ``revision="refs/convert/parquet"``.

Split mapping (``seed`` fixes every shuffle; documented in task.json through the options):

- the real ``train`` split is shuffled with ``random.Random(f"xkdbench/hf/{task}/{seed}")``; its first
  ``warmup_size`` records are our ``warmup``; when the dataset has no validation split (GSM8K), the next
  ``validation_size`` records are our ``validation``; the rest, in the shuffled order, is our ``train``
  pool, so ``fraction`` takes prefixes of a fixed random order. Warmup, validation and train are
  therefore disjoint.
- otherwise ``validation`` is the real validation split (XSum validation; WMT14 newstest2013) and
  ``test`` the real test split (XSum test; WMT14 newstest2014; GSM8K test).
- ``sizes`` caps a split (None = all of it): train keeps the first N of its shuffled pool; validation
  and test keep N records drawn by a seeded shuffle (kept in the dataset's order).

Records keep only the task's schema fields; a dataset missing one of them is an error.
"""
from __future__ import annotations

import random
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from xkdbench.tasks.base import Task


def _load(task: Task):
    import datasets

    opts = task.options()
    try:
        loaded = datasets.load_dataset(opts["dataset_path"], opts["dataset_name"], revision=opts["revision"])
    except FileNotFoundError as e:
        raise FileNotFoundError(
            f"dataset_path: cannot load {opts['dataset_path']!r} (name {opts['dataset_name']!r}, revision "
            f"{opts['revision']!r}): {e}"
        ) from e
    if not isinstance(loaded, datasets.DatasetDict):
        raise ValueError(f"dataset_path: {opts['dataset_path']!r} did not load as a dataset with named splits")
    return loaded


def _records(task: Task, dataset, split_name: str, indices: list[int] | None = None) -> list[dict]:
    """Schema-exact records of `dataset` (optionally only the rows `indices`, in that order)."""
    missing = sorted(set(task.fields) - set(dataset.column_names))
    if missing:
        raise ValueError(
            f"dataset_path: split {split_name!r} of {task.options()['dataset_path']!r} lacks field(s) "
            f"{', '.join(missing)} of the {task.name} schema ({', '.join(sorted(task.fields))})"
        )
    dataset = dataset.select_columns(list(task.fields))
    if indices is not None:
        dataset = dataset.select(indices)
    return [{key: row[key] for key in task.fields} for row in dataset]


def _sample_indices(n: int, cap: int | None, rng: random.Random) -> list[int] | None:
    """None (all rows) or `cap` row indices drawn by `rng`, in the dataset's order."""
    if cap is None or cap >= n:
        return None
    return sorted(rng.sample(range(n), cap))


def load_hf_splits(task: Task) -> dict[str, list[dict]]:
    """All four splits of `task` (source hf), as lists of schema-exact records."""
    opts = task.options()
    loaded = _load(task)
    needed = ["train", "test"] + (["validation"] if task.hf_has_validation else [])
    absent = [s for s in needed if s not in loaded]
    if absent:
        raise ValueError(
            f"dataset_path: {opts['dataset_path']!r} has splits {', '.join(loaded)}; {task.name} needs "
            f"{', '.join(needed)} (missing: {', '.join(absent)})"
        )
    caps = opts["sizes"]
    n_train = len(loaded["train"])
    order = list(range(n_train))
    random.Random(f"xkdbench/hf/{task.name}/{opts['seed']}").shuffle(order)
    carve = opts["warmup_size"] + (0 if task.hf_has_validation else opts["validation_size"])
    if n_train <= carve:
        raise ValueError(
            f"warmup_size/validation_size: the train split of {opts['dataset_path']!r} has {n_train} records, "
            f"too few to carve out {carve} and keep a train pool"
        )
    parts = {"warmup": order[: opts["warmup_size"]], "train": order[carve:]}
    if not task.hf_has_validation:
        parts["validation"] = order[opts["warmup_size"]: carve]
    if caps["train"] is not None:
        parts["train"] = parts["train"][: caps["train"]]
    out: dict[str, list[dict]] = {}
    for split in ("warmup", "validation", "test"):
        rng = random.Random(f"xkdbench/hf/{task.name}/{opts['seed']}/{split}")
        if split in parts:  # carved out of train, already in a random order
            keep = _sample_indices(len(parts[split]), caps[split], rng)
            rows = parts[split] if keep is None else [parts[split][i] for i in keep]
            out[split] = _records(task, loaded["train"], "train", rows)
        else:
            keep = _sample_indices(len(loaded[split]), caps[split], rng)
            out[split] = _records(task, loaded[split], split, keep)
    out["train"] = _records(task, loaded["train"], "train", parts["train"])
    return out
