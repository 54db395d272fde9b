"""Shared pieces of the catalogue: the default vocabulary and features, the catalogue's Task (which keeps
the fields its postprocessor needs), T5's postprocessors and grouped metrics, and `task_with_examples`
to run a registered task's preprocessing on hand-written raw examples (no TFDS data needed)."""

from __future__ import annotations

import collections
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from mesh_t5.data import metrics
from mesh_t5.data.registry import Context, Feature, StreamPreprocessor, Task, TaskRegistry, get_task
from mesh_t5.data.sources import FunctionSource, TfdsSource
from mesh_t5.data.stream import Stream
from mesh_t5.errors import UserError
from mesh_t5.vocab import LazyVocabulary, SentencePieceVocabulary, Vocabulary

VOCAB_ENV = "MESH_T5_VOCAB"


def _load_default_vocab() -> SentencePieceVocabulary:
    path = os.environ.get(VOCAB_ENV)
    if not path:
        raise UserError(
            f"the catalogue tasks need a SentencePiece vocabulary: set {VOCAB_ENV}=path/to/spiece.model "
            "(T5's own, or one trained with SentencePieceVocabulary.train)"
        )
    return SentencePieceVocabulary(path, extra_ids=100)


# Loaded on first use, so registering the catalogue needs no file.
DEFAULT_VOCABULARY = LazyVocabulary(_load_default_vocab, f"${VOCAB_ENV}")
# As T5: inputs are optional (decoder-only tasks have none), EOS on both.
DEFAULT_OUTPUT_FEATURES = {
    "inputs": Feature(DEFAULT_VOCABULARY, add_eos=True, required=False),
    "targets": Feature(DEFAULT_VOCABULARY, add_eos=True),
}
TFDS_DATA_DIR = os.environ.get("TFDS_DATA_DIR")


class CatalogueTask(Task):
    """A Task whose examples also carry the raw `passthrough` fields (e.g. SQuAD's "answers", ReCoRD's
    "idx/query"), as seqio keeps them for postprocessing; the feature converters ignore them."""

    def __init__(self, *args: Any, passthrough: Sequence[str] = (), **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.passthrough = tuple(passthrough)

    def _finalize_fn(self, seq_len: Mapping[str, int] | None) -> Callable:
        base = super()._finalize_fn(seq_len)

        def finalize(key: Any, ex: dict) -> dict:
            out = base(key, ex)
            out.update({k: ex[k] for k in self.passthrough if k in ex})
            return out

        return finalize


def add_tfds_task(
    name: str,
    tfds_name: str,
    splits: Sequence[str] | Mapping[str, str],
    preprocessors: Sequence[Callable | StreamPreprocessor],
    *,
    output_features: Mapping[str, Feature] | None = None,
    postprocess_fn: Callable | None = None,
    metric_fns: Sequence[Callable] = (),
    passthrough: Sequence[str] = (),
) -> Task:
    """Registers (overwriting) a catalogue task over a TFDS dataset, opened on first use; returns it.

    `splits` is given explicitly so that listing the task needs no data."""
    task = CatalogueTask(
        name,
        TfdsSource(tfds_name, data_dir=TFDS_DATA_DIR, splits=splits),
        preprocessors,
        output_features or DEFAULT_OUTPUT_FEATURES,
        postprocess_fn=postprocess_fn,
        metric_fns=metric_fns,
        passthrough=passthrough,
    )
    return TaskRegistry.add(task, overwrite=True)


def task_with_examples(
    name: str | Task,
    examples: Mapping[str, Sequence[Mapping[str, Any]]],
    vocabulary: Vocabulary | None = None,
) -> Task:
    """Returns an unregistered copy of task `name` that reads `examples` ({split: [raw example dicts, as
    TFDS yields them]}) instead of its source; `vocabulary` (optional) replaces its features' vocabulary.

    The copy keeps the preprocessors, postprocessor and metrics: `copy.get_dataset(split)` gives exactly
    what the task would give on that data (for tests, and to see a task's formatting without its data).
    """
    task = name if isinstance(name, Task) else get_task(name)
    data = {split: [dict(ex) for ex in exs] for split, exs in examples.items()}
    source = FunctionSource(
        lambda split: data[split], splits=tuple(data), num_examples={s: len(v) for s, v in data.items()}
    )
    features = dict(task.output_features)
    if vocabulary is not None:
        features = {k: Feature(vocabulary, f.add_eos, f.required) for k, f in features.items()}
    return CatalogueTask(
        task.name,
        source,
        task.preprocessors,
        features,
        postprocess_fn=task.postprocess_fn,
        metric_fns=task.metric_fns,
        passthrough=getattr(task, "passthrough", ()),
    )


class ExpandEach(StreamPreprocessor):
    """A preprocessor making several examples of one: `fn(example, ctx) -> list of examples` (T5's
    ReCoRD gives one example per answer). Resumable: the state is the upstream state before the
    current source example plus how many of its outputs were given."""

    def __init__(self, fn: Callable[[dict, Context], list[dict]]):
        self.fn = fn
        self.__name__ = getattr(fn, "__name__", "expand")

    def stream(self, upstream: Stream, ctx: Context) -> Stream:
        return _ExpandStream(upstream, self.fn, ctx)


class _ExpandStream(Stream):
    def __init__(self, upstream: Stream, fn: Callable, ctx: Context):
        self.upstream, self.fn, self.ctx = upstream, fn, ctx
        self.before = upstream.get_state()
        self.pending: list[tuple[Any, dict]] = []
        self.given = 0

    def _fill(self) -> None:
        self.before = self.upstream.get_state()
        key, ex = next(self.upstream)
        self.pending = [((*key, j), out) for j, out in enumerate(self.fn(ex, self.ctx))]
        self.given = 0

    def __next__(self) -> tuple[Any, dict]:
        while self.given >= len(self.pending):
            self._fill()
        self.given += 1
        return self.pending[self.given - 1]

    def get_state(self) -> dict:
        return {"before": self.before, "given": self.given, "open": self.given < len(self.pending)}

    def set_state(self, state: dict) -> None:
        self.upstream.set_state(state["before"])
        self.pending, self.given = [], 0
        if state["open"]:
            self._fill()
            self.given = int(state["given"])
        else:
            self.before = state["before"]


# ----------------------------------------------------------------------------- postprocessors (T5's)


def string_label_to_class_id(label_classes: Sequence[str], default: int = -1) -> Callable[..., int]:
    """Returns a postprocessor mapping a label string to its index in `label_classes` (`default` if absent)."""
    classes = list(label_classes)

    def fn(text: str, example: Any = None, is_target: bool = False) -> int:
        return classes.index(text) if text in classes else default

    fn.__name__ = "string_label_to_class_id"
    return fn


def string_to_float(text: str, example: Any = None, is_target: bool = False, default: float = -1.0) -> float:
    """Returns float(text), or `default` when the model wrote something that is not a number (T5)."""
    try:
        return float(text)
    except ValueError:
        return default


def qa(text: str, example: Mapping | None = None, is_target: bool = False) -> Any:
    """Returns all reference answers for a target (from the example's "answers"), the text for a prediction."""
    if is_target:
        if example is None or "answers" not in example:
            raise UserError("the qa postprocessor needs the example's 'answers' for targets")
        return list(example["answers"])
    return text


_TRUE_FALSE = string_label_to_class_id(["False", "True"])


def multirc(text: str, example: Mapping | None = None, is_target: bool = False) -> dict:
    """Returns {"value": 0/1/-1} plus, for a target, {"group": the example's question index} (T5)."""
    out: dict[str, Any] = {"value": _TRUE_FALSE(text)}
    if is_target:
        out["group"] = example["idx/question"]  # type: ignore[index]
    return out


def record(text: str, example: Mapping | None = None, is_target: bool = False) -> dict:
    """Returns {"value": prediction} or, for a target, {"value": all answers, "group": (passage, query)}."""
    if is_target:
        return {
            "value": list(example["answers"]),  # type: ignore[index]
            "group": (example["idx/passage"], example["idx/query"]),  # type: ignore[index]
        }
    return {"value": text}


_DETERMINERS = {
    "a", "an", "few", "her", "his", "each", "every", "many", "much", "my", "our", "some", "that", "the",
    "their", "these", "this", "those", "which", "whose", "your",
}  # fmt: skip


def wsc_referent_match(text: str, example: Mapping | None = None, is_target: bool = False) -> int:
    """Returns the label for a target; for a prediction, 1 if it names the example's referent (ignoring
    case and determiners, either word set containing the other, a possessive only matching a possessive),
    -1 if it is empty once determiners are removed (T5's `wsc_simple` postprocessor)."""
    if is_target:
        return int(example["label"])  # type: ignore[index]

    def clean(s: str) -> str:
        return " ".join(w for w in s.strip().lower().split(" ") if w not in _DETERMINERS)

    prediction = clean(text)
    if not prediction:  # empty or determiners only: neither label, so it cannot match label 0 by chance
        return -1
    referent = clean(example["targets_pretokenized"])  # type: ignore[index]
    if ("'" in prediction) != ("'" in referent):
        return 0
    p, r = set(prediction.split(" ")), set(referent.split(" "))
    return int(p <= r or r <= p)


# ----------------------------------------------------------------------------- grouped metrics (T5's)


def deduplicate_metric(metric_fn: Callable, group_key: str = "group", value_key: str = "value") -> Callable:
    """Returns a metric computing `metric_fn` on the first example of each target group (ReCoRD)."""

    def fn(targets: Sequence[Mapping], predictions: Sequence[Mapping]) -> dict[str, float]:
        seen, t_out, p_out = set(), [], []
        for t, p in zip(targets, predictions, strict=True):
            if t[group_key] in seen:
                continue
            seen.add(t[group_key])
            t_out.append(t[value_key])
            p_out.append(p[value_key])
        return metric_fn(t_out, p_out)

    fn.__name__ = f"deduplicate_{getattr(metric_fn, '__name__', 'metric')}"
    return fn


def mean_group_metric(metric_fn: Callable, group_key: str = "group", value_key: str = "value") -> Callable:
    """Returns a metric averaging `metric_fn` over the groups of targets (MultiRC exact match per question)."""

    def fn(targets: Sequence[Mapping], predictions: Sequence[Mapping]) -> dict[str, float]:
        groups: dict[Any, tuple[list, list]] = collections.defaultdict(lambda: ([], []))
        for t, p in zip(targets, predictions, strict=True):
            groups[t[group_key]][0].append(t[value_key])
            groups[t[group_key]][1].append(p[value_key])
        scores: dict[str, list[float]] = collections.defaultdict(list)
        for ts, ps in groups.values():
            for k, v in metric_fn(ts, ps).items():
                scores[k].append(v)
        return {k: float(np.mean(v)) for k, v in scores.items()}

    fn.__name__ = f"mean_group_{getattr(metric_fn, '__name__', 'metric')}"
    return fn


def all_match(targets: Sequence, predictions: Sequence) -> dict[str, float]:
    """Returns {"exact_match": 100 if every prediction equals its target else 0}."""
    return {"exact_match": 100.0 * float(np.array_equal(np.asarray(targets), np.asarray(predictions)))}


def multirc_f1_over_all_answers(
    targets: Sequence[Mapping], predictions: Sequence[Mapping]
) -> dict[str, float]:
    """Returns T5's MultiRC F1: binary F1 over every answer's "value" (invalid predictions count wrong)."""
    return metrics.f1_score_with_invalid([t["value"] for t in targets], [p["value"] for p in predictions])
