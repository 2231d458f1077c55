"""The task interface, shared by every task family and both data sources.

A task is one family (summarization, translation, reasoning) from one source:

- ``embedded``: a deterministic generator shipped in the package (no download). Options: ``seed``,
  ``difficulty``, ``sizes``, ``data_dir``. It has an oracle (``oracle_score``) that checks meaning.
- ``hf``: the real dataset through ``datasets.load_dataset(dataset_path, dataset_name, revision=...)``,
  the same call for a hub id and for a local directory of files. Options: ``dataset_path``,
  ``dataset_name``, ``revision``, ``sizes`` (caps), ``seed``, ``warmup_size``, ``validation_size``,
  ``data_dir``. No oracle.

Records always carry exactly the real dataset's fields (XSum: document/summary/id; WMT14:
translation{de,en}; GSM8K: question/answer), so nothing downstream can tell the sources apart.

Splits (``SPLITS``): ``train`` (the distillation pool), ``warmup`` (a small labelled split for the
student's SFT initialisation), ``validation`` and ``test``. ``load("train", fraction=f)`` returns the
first ``ceil(f * N)`` records of the train pool, which is stored in a fixed seeded random order, so a
smaller fraction is always a prefix (a subset) of a larger one. (Embedded records are independent draws,
record i from its own RNG seeded with the string "xkdbench/{task}/d{difficulty}/s{seed}/{split}/{i}/
{attempt}", so the generation order already is a seeded random order; hf train pools are shuffled.)
Embedded splits are disjoint by construction: they are generated test, validation, warmup, train, and a
record whose input already occurred is redrawn (attempt + 1).

``prepare(data_dir)`` writes every split to ``data_dir/{split}.jsonl`` plus ``data_dir/task.json``;
a task built with the option ``data_dir`` then reads those files, whatever its source.
"""
from __future__ import annotations

import math
import os
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from xkdbench.io import read_json, read_jsonl, write_json, write_jsonl
from xkdbench.tasks import metrics

SPLITS = ("train", "warmup", "validation", "test")
SOURCES = ("embedded", "hf")
# Embedded splits are generated in this order; an input already used by an earlier split (or earlier
# in the same split) is redrawn, so the splits are disjoint by construction.
GENERATION_ORDER = ("test", "validation", "warmup", "train")
MAX_REDRAWS = 200

EMBEDDED_OPTIONS = ("seed", "difficulty", "sizes", "data_dir")
HF_OPTIONS = ("dataset_path", "dataset_name", "revision", "sizes", "seed", "warmup_size", "validation_size",
              "data_dir")
DEFAULT_SIZES = {"train": 4000, "warmup": 200, "validation": 200, "test": 200}


class OracleUnavailableError(NotImplementedError):
    """Raised by oracle_score/oracle_details on a task whose source has no oracle (hf)."""


def _check_int(field: str, value: Any, low: int, high: int | None = None) -> int:
    allowed = f"an integer in {low}..{high}" if high is not None else f"an integer >= {low}"
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{field} must be {allowed}, got {value!r}")
    if value < low or (high is not None and value > high):
        raise ValueError(f"{field} must be {allowed}, got {value!r}")
    return value


def _check_optional_str(field: str, value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{field} must be a string or null, got {value!r}")
    return value


class Task:
    """Base class: option handling, split loading, fractions, prepare, metrics dispatch.

    Subclasses (one per family) set the class attributes below and implement ``prompt``,
    ``target``, ``_corpus_metrics``, ``_example_metric`` and the embedded hooks ``_generator`` /
    ``_oracle_details``.
    """

    name: str = ""
    headline_metric: str = ""
    fields: dict[str, type] = {}          # the real dataset's schema: field -> type
    hf_path: str = ""                      # default hub id
    hf_name: str | None = None             # default config name
    hf_has_validation: bool = True         # False (GSM8K): validation is carved out of train
    difficulty_levels: int = 4             # difficulty in 0..difficulty_levels-1
    default_difficulty: int = 1
    generator_options: tuple[str, ...] = ()  # embedded options of this family only (_resolve_generator_options)

    def __init__(self, source: str = "embedded", **options: Any):
        if source not in SOURCES:  # get_task checks first; this guards direct construction
            raise ValueError(f"source must be one of {', '.join(SOURCES)}, got {source!r}")
        self.source = source
        self.has_oracle = source == "embedded"
        self._options = self._resolve_options(options)
        self._cache: dict[str, list[dict]] = {}

    # -- options -----------------------------------------------------------------------------------
    def _resolve_options(self, options: dict[str, Any]) -> dict[str, Any]:
        allowed = EMBEDDED_OPTIONS + self.generator_options if self.source == "embedded" else HF_OPTIONS
        unknown = sorted(set(options) - set(allowed))
        if unknown:
            raise ValueError(
                f"unknown option(s) {', '.join(map(repr, unknown))} for task {self.name!r} with source "
                f"{self.source!r}; allowed options: {', '.join(allowed)}"
            )
        resolved: dict[str, Any] = {"seed": _check_int("seed", options.get("seed", 0), 0)}
        data_dir = options.get("data_dir")
        if data_dir is not None and not isinstance(data_dir, (str, os.PathLike)):
            raise ValueError(f"data_dir must be a path or null, got {data_dir!r}")
        if self.source == "embedded":
            resolved["difficulty"] = _check_int(
                "difficulty", options.get("difficulty", self.default_difficulty), 0, self.difficulty_levels - 1
            )
            resolved["sizes"] = self._check_sizes(options.get("sizes"), DEFAULT_SIZES, allow_none=False)
            resolved.update(self._resolve_generator_options(options, resolved["difficulty"]))
        else:
            resolved["dataset_path"] = options.get("dataset_path", self.hf_path)
            if not isinstance(resolved["dataset_path"], (str, os.PathLike)) or not str(resolved["dataset_path"]):
                raise ValueError(f"dataset_path must be a hub id or a directory, got {resolved['dataset_path']!r}")
            resolved["dataset_path"] = str(resolved["dataset_path"])
            resolved["dataset_name"] = _check_optional_str("dataset_name", options.get("dataset_name", self.hf_name))
            resolved["revision"] = _check_optional_str("revision", options.get("revision"))
            resolved["sizes"] = self._check_sizes(options.get("sizes"), dict.fromkeys(SPLITS), allow_none=True)
            resolved["warmup_size"] = _check_int("warmup_size", options.get("warmup_size", 200), 1)
            resolved["validation_size"] = _check_int("validation_size", options.get("validation_size", 500), 1)
        resolved["data_dir"] = str(data_dir) if data_dir is not None else None
        return resolved

    def _resolve_generator_options(self, options: dict[str, Any], difficulty: int) -> dict[str, Any]:
        """This family's own embedded options (`generator_options`), checked, with defaults filled in."""
        return {}

    @staticmethod
    def _check_sizes(sizes: Any, defaults: dict, *, allow_none: bool) -> dict:
        if sizes is None:
            return dict(defaults)
        if not isinstance(sizes, dict):
            raise ValueError(f"sizes must be a mapping with keys among {', '.join(SPLITS)}, got {sizes!r}")
        unknown = sorted(set(sizes) - set(SPLITS))
        if unknown:
            raise ValueError(f"sizes: unknown split(s) {', '.join(map(repr, unknown))}; allowed: {', '.join(SPLITS)}")
        out = dict(defaults)
        for split, value in sizes.items():
            if value is None and allow_none:
                out[split] = None
            else:
                out[split] = _check_int(f"sizes.{split}", value, 1)
        return out

    def options(self) -> dict[str, Any]:
        """The resolved options (every default filled in), for provenance."""
        return {k: (dict(v) if isinstance(v, dict) else v) for k, v in self._options.items()}

    def describe(self) -> dict[str, Any]:
        """What task.json records: the task, its source and options (data_dir excluded)."""
        return {
            "name": self.name,
            "source": self.source,
            "options": {k: v for k, v in self.options().items() if k != "data_dir"},
            "headline_metric": self.headline_metric,
            "has_oracle": self.has_oracle,
            "fields": sorted(self.fields),
        }

    # -- data --------------------------------------------------------------------------------------
    def load(self, split: str, fraction: float = 1.0):
        """The records of `split` as a ``datasets.Dataset`` in the real schema.

        `fraction` (in (0, 1]) applies to ``train`` only: the first ceil(fraction * N) records of the
        pool, which is kept in a fixed seeded random order, so smaller fractions are prefixes of larger ones.
        """
        import datasets

        return datasets.Dataset.from_list(self.records(split, fraction))

    def records(self, split: str, fraction: float = 1.0) -> list[dict]:
        """The same records as `load`, as plain dicts: what a training or evaluation job iterates.

        Building and iterating a ``datasets.Dataset`` (and importing ``datasets``) costs a cell seconds
        and gives nothing a job uses."""
        records = self._records(split)
        return records[:self._fraction_size(split, fraction, len(records))]

    @staticmethod
    def _fraction_size(split: str, fraction: Any, n: int) -> int:
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not (0.0 < fraction <= 1.0):
            raise ValueError(f"fraction must be a number in (0, 1], got {fraction!r}")
        if split != "train" and fraction != 1.0:
            raise ValueError(f"fraction applies only to the train split; got fraction={fraction!r} for {split!r}")
        # round() guards against float noise such as 0.1 * 30 = 3.0000000000000004 -> 4
        return max(1, math.ceil(round(fraction * n, 9)))

    def _check_split(self, split: str) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")

    def _records(self, split: str) -> list[dict]:
        self._check_split(split)
        if split not in self._cache:
            local = self._local_file(split)
            if local is not None:
                self._cache[split] = self._read_local(local)
            elif self.source == "embedded":
                self._cache.update(self._generate_all())
            else:
                self._cache.update(self._load_hf())
        return self._cache[split]

    def _local_file(self, split: str) -> Path | None:
        if self._options["data_dir"] is None:
            return None
        path = Path(self._options["data_dir"]) / f"{split}.jsonl"
        return path if path.exists() else None

    def _read_local(self, path: Path) -> list[dict]:
        info_path = path.parent / "task.json"
        if info_path.exists():
            info = read_json(info_path)
            mine = self.describe()
            theirs = {k: info.get(k) for k in ("name", "source", "options")}
            if theirs != {k: mine[k] for k in ("name", "source", "options")}:
                raise ValueError(
                    f"data_dir {str(path.parent)!r} holds data prepared for {theirs}, which differs from this "
                    f"task {({k: mine[k] for k in ('name', 'source', 'options')})}; prepare it again or fix the options"
                )
        records = read_jsonl(path)
        for i, record in enumerate(records):
            self._check_record(record, f"{path}:{i + 1}")
        return records

    def _check_record(self, record: dict, where: str) -> None:
        if set(record) != set(self.fields):
            raise ValueError(
                f"{where}: record fields {sorted(record)} differ from the {self.name} schema {sorted(self.fields)}"
            )

    def prepare(self, data_dir: str | os.PathLike) -> dict[str, int]:
        """Materialise every split to data_dir/{split}.jsonl and data_dir/task.json (atomic writes).

        Returns the split sizes. The records come from the task's source (the generator, or the
        dataset), never from files already in `data_dir`.
        """
        data_dir = Path(data_dir)
        if self.source == "embedded":
            data = self._generate_all()
        else:
            data = self._load_hf()
        if self._options["data_dir"] is None:
            self._cache.update(data)
        sizes = {}
        for split in SPLITS:
            write_jsonl(data_dir / f"{split}.jsonl", data[split])
            sizes[split] = len(data[split])
        write_json(data_dir / "task.json", {**self.describe(), "sizes": sizes})
        return sizes

    def training_texts(self) -> Iterator[str]:
        """Prompts and targets of train and warmup, for training a tokenizer."""
        for split in ("train", "warmup"):
            for record in self._records(split):
                yield self.prompt(record)
                yield self.target(record)

    # -- embedded generation -----------------------------------------------------------------------
    def _generator(self):
        """The family's generator object (embedded source); see e.g. summarization.SummaryGenerator."""
        raise NotImplementedError

    def _input_text(self, record: dict) -> str:
        """The record's input field; used to keep splits disjoint."""
        return self.prompt(record)

    def _generate_all(self) -> dict[str, list[dict]]:
        opts = self._options
        generator = self._generator()
        seen: set[str] = set()
        data: dict[str, list[dict]] = {}
        for split in GENERATION_ORDER:
            records = []
            for index in range(opts["sizes"][split]):
                for attempt in range(MAX_REDRAWS):
                    # String seeds are hashed with SHA-512 by `random`: stable across processes and versions.
                    rng = random.Random(
                        f"xkdbench/{self.name}/d{opts['difficulty']}/s{opts['seed']}/{split}/{index}/{attempt}"
                    )
                    record = generator.record(rng, split=split, index=index)
                    key = self._input_text(record)
                    if key not in seen:
                        break
                else:
                    raise ValueError(
                        f"sizes: could not draw {opts['sizes'][split]} distinct {split} inputs at difficulty "
                        f"{opts['difficulty']} (the input space is too small); lower sizes or raise difficulty"
                    )
                seen.add(key)
                records.append(record)
            data[split] = records
        return data

    # -- hf source ---------------------------------------------------------------------------------
    def _load_hf(self) -> dict[str, list[dict]]:
        from xkdbench.tasks.hf import load_hf_splits

        return load_hf_splits(self)

    # -- formatting (per family) -------------------------------------------------------------------
    def prompt(self, example: dict) -> str:
        raise NotImplementedError

    def target(self, example: dict) -> str:
        raise NotImplementedError

    # -- metrics -----------------------------------------------------------------------------------
    def _corpus_metrics(self, predictions: list[str], references: list[str]) -> dict[str, float]:
        raise NotImplementedError

    def _example_metric(self, prediction: str, reference: str) -> float:
        raise NotImplementedError

    @staticmethod
    def _check_lengths(predictions: list[str], examples: list[dict]) -> None:
        if len(predictions) != len(examples):
            raise ValueError(f"got {len(predictions)} predictions for {len(examples)} examples")
        if not predictions:
            raise ValueError("no predictions to score")

    def score(self, predictions: list[str], examples: list[dict]) -> dict[str, float]:
        """Corpus metrics of `predictions` against the examples' targets (plus the oracle on embedded)."""
        examples = list(examples)
        self._check_lengths(predictions, examples)
        references = [self.target(ex) for ex in examples]
        result = self._corpus_metrics(list(predictions), references)
        if self.has_oracle:
            details = [self.oracle_details(ex, out) for ex, out in zip(examples, predictions, strict=True)]
            result["oracle"] = sum(d["oracle"] for d in details) / len(details)
            result.update(self._extra_oracle_metrics(details))
        return result

    def _extra_oracle_metrics(self, details: list[dict[str, float]]) -> dict[str, float]:
        return {}

    def example_scores(self, predictions: list[str], examples: list[dict]) -> list[float]:
        """One number per example (for win/tie/lose), on the same scale as the family's corpus metric."""
        examples = list(examples)
        self._check_lengths(predictions, examples)
        return [self._example_metric(p, self.target(ex)) for p, ex in zip(predictions, examples, strict=True)]

    # -- oracle ------------------------------------------------------------------------------------
    def _require_oracle(self) -> None:
        if not self.has_oracle:
            raise OracleUnavailableError(
                f"task {self.name!r} from source {self.source!r} has no oracle; only the embedded source "
                f"has one (check task.has_oracle)"
            )

    def oracle_score(self, example: dict, output: str) -> float:
        """The true reward in [0, 1]: does `output` state the meaning the example asks for?"""
        return self.oracle_details(example, output)["oracle"]

    def oracle_details(self, example: dict, output: str) -> dict[str, float]:
        """The oracle's fields; always includes "oracle" (the score)."""
        self._require_oracle()
        return self._oracle_details(example, output)

    def _oracle_details(self, example: dict, output: str) -> dict[str, float]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(source={self.source!r}, options={self.options()!r})"


__all__ = ["Task", "SPLITS", "SOURCES", "OracleUnavailableError", "metrics"]
