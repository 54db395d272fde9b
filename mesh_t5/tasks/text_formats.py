"""T5's text formatting of the GLUE, SuperGLUE, SQuAD and WSC/DPR examples (t5/data/preprocessors.py):
each function returns a per-example preprocessor `fn(example, ctx) -> {"inputs": str, "targets": str, ...}`
that reads the raw fields as TFDS yields them."""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from mesh_t5.data.registry import Context
from mesh_t5.errors import UserError

Example = dict[str, Any]


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _label_name(label: Any, label_names: Sequence[str]) -> str:
    """Returns label_names[label], or "<unk>" for label -1 (unlabeled test examples), as T5."""
    label = int(label)
    return "<unk>" if label == -1 else label_names[label]


def glue(
    benchmark_name: str,
    label_names: Sequence[str],
    feature_names: Sequence[str] | None = None,
    id_key: str | None = "idx",
) -> Callable[[Example, Context], Example]:
    """Returns T5's `glue` formatting: "{benchmark} {key1}: {v1} {key2}: {v2}" -> the label's name.

    Keys are `feature_names` in order, or every field except "label" and "idx", sorted (T5's default).
    MultiRC drops its HTML markup and keeps "idx/paragraph", "idx/question", "idx/answer" for evaluation.
    """

    def glue_fn(ex: Example, ctx: Context) -> Example:
        keys = feature_names or sorted(set(ex) - {"label", "idx"})
        joined = " ".join([benchmark_name, *(f"{k}: {_text(ex[k])}" for k in keys)])
        out: Example = {}
        if benchmark_name == "multirc":
            joined = re.sub("<(/)?b>", "", joined.replace("<br>", " "))
            for part in ("paragraph", "question", "answer"):
                out[f"idx/{part}"] = ex["idx"][part]
        elif id_key and id_key in ex:
            out["idx"] = ex[id_key]
        out["inputs"] = joined
        out["targets"] = _label_name(ex["label"], label_names)
        return out

    glue_fn.__name__ = f"glue({benchmark_name})"
    return glue_fn


def stsb_target(score: float) -> str:
    """Returns the STS-B score rounded to the nearest 0.2, with one decimal ("3.8"): T5's classes."""
    # float32 and round-half-to-even, as tf.round on the TFDS float32 label.
    value = np.round(np.float32(score) * np.float32(5)) / np.float32(5)
    return f"{float(value):.1f}"


def stsb(ex: Example, ctx: Context) -> Example:
    """STS-B: "stsb sentence1: {s1} sentence2: {s2}" -> the score rounded to 0.2 ("1.66" -> "1.6")."""
    out = {
        "inputs": f"stsb sentence1: {_text(ex['sentence1'])} sentence2: {_text(ex['sentence2'])}",
        "targets": stsb_target(ex["label"]),
    }
    if "idx" in ex:
        out["idx"] = ex["idx"]
    return out


def record_examples(ex: Example, ctx: Context) -> list[Example]:
    """ReCoRD: one example per answer ("<unk>" when there is none), each
    "record query: {query} entities: {e1, e2} passage: {passage}" -> an answer; all answers kept."""
    passage = _text(ex["passage"])
    passage = re.sub(r"(\.|\?|\!|\"|\')\n@highlight\n", r"\1 ", passage)
    passage = passage.replace("\n@highlight\n", ". ")
    entities = ", ".join(_text(e) for e in ex["entities"])
    inputs = f"record query: {_text(ex['query'])} entities: {entities} passage: {passage}"
    answers = [_text(a) for a in ex["answers"]]
    base = {
        "inputs": inputs,
        "answers": answers,
        "idx/passage": ex["idx"]["passage"],
        "idx/query": ex["idx"]["query"],
    }
    return [dict(base, targets=a) for a in (answers or ["<unk>"])]


record_examples.__name__ = "record"

# RE2's [[:punct:]] (what T5's tf.strings.regex_replace uses): ASCII punctuation only.
_PUNCT = re.compile("([" + re.escape(string.punctuation) + "])")
_SPACES = re.compile(r"[\t\n\f\r ]+")  # RE2's \s


def pad_punctuation(text: str) -> str:
    """Returns `text` with spaces around ASCII punctuation and runs of whitespace collapsed (not stripped)."""
    return _SPACES.sub(" ", _PUNCT.sub(r" \1 ", text))


def squad(include_context: bool = True) -> Callable[[Example, Context], Example]:
    """Returns T5's SQuAD formatting: "question: {q} context: {c}" -> the first answer, punctuation padded
    ("A question?" -> "A question ? "); all answers kept in "answers" for the metric."""

    def squad_fn(ex: Example, ctx: Context) -> Example:
        answers = ex["answers"]["text"] if isinstance(ex["answers"], Mapping) else ex["answers"]
        a = [pad_punctuation(_text(t)) for t in answers]
        q, c = pad_punctuation(_text(ex["question"])), pad_punctuation(_text(ex["context"]))
        parts = ["question:", q, "context:", c] if include_context else ["squad trivia question:", q]
        if not a:
            raise UserError(f"task {ctx.task.name!r}: a SQuAD example (id {ex.get('id')!r}) has no answers")
        return {
            "inputs": _SPACES.sub(" ", " ".join(parts)),
            "targets": a[0],
            "id": _text(ex.get("id", "")),
            "context": c,
            "question": q,
            "answers": a,
        }

    squad_fn.__name__ = "squad"
    return squad_fn


# Two WSC texts whose span2_index does not point at the pronoun; T5 hard-codes their inputs.
_WSC_SPECIAL = {
    'The boy continued to whip the pony , and eventually the pony threw him over. John laughed out quite '
    'loud. "Good for him," he said. ':
    'The boy continued to whip the pony , and eventually the pony threw him over. John laughed out quite '
    'loud. "Good for X ," he said.',
    "When they had eventually calmed down a bit , and had gotten home, Mr. Farley put the magic pebble in "
    "an iron safe . Some day they might want to use it , but really for now, what more could they wish for?":
    "When they had eventually calmed down a bit , and had gotten home, Mr. Farley put the magic pebble in "
    "an iron safe . Some day they might want to use X , but really for now, what more could they wish for?",
}  # fmt: skip


def _wsc_inputs(ex: Example) -> str | None:
    """Returns the WSC text with the pronoun (word span2_index) replaced by "X", None if it is not there."""
    text = _text(ex["text"])
    if text in _WSC_SPECIAL:
        return _WSC_SPECIAL[text]
    words = text.split(" ")
    i = int(ex["span2_index"])
    if not 0 < i < len(words) or words[i] != _text(ex["span2_text"]):
        return None
    return " ".join([*words[:i], "X", *words[i + 1 :]])


def wsc_simple(correct_referent_only: bool = False) -> Callable[[Example, Context], Example | None]:
    """Returns T5's simple WSC: "wsc: ... *he* ..." -> the candidate referent (span1_text).

    With `correct_referent_only` (training), examples whose candidate is wrong are dropped; for eval the
    label is kept so that the postprocessor `wsc_referent_match` can score "did the model name the referent".
    Examples whose span2_index does not point at the pronoun are dropped (counted in task.stats).
    """

    def wsc_simple_fn(ex: Example, ctx: Context) -> Example | None:
        label = int(ex.get("label", 0))
        if correct_referent_only and label != 1:
            return None
        text = _wsc_inputs(ex)
        if text is None:
            return None
        pronoun = _text(ex["span2_text"])
        return {
            "inputs": "wsc: " + text.replace(" X ", f" *{pronoun}* "),
            "targets": _text(ex["span1_text"]),
            "label": label,
            "idx": ex.get("idx", -1),
        }

    wsc_simple_fn.__name__ = "wsc_simple"
    return wsc_simple_fn


def definite_pronoun_resolution_simple(ex: Example, ctx: Context) -> Example:
    """DPR: "wsc: {sentence with the first matching *pronoun* starred}" -> the right candidate."""
    pronoun = re.escape(_text(ex["pronoun"]))
    sentence = re.sub(r" (" + pronoun + r")( |\.|,)", r" *\1*\2", _text(ex["sentence"]), count=1)
    return {"inputs": f"wsc: {sentence}", "targets": _text(ex["candidates"][int(ex["label"])])}


definite_pronoun_resolution_simple.__name__ = "definite_pronoun_resolution_simple"


_WNLI_PRONOUNS = {"he", "she", "they", "it", "her", "his", "their", "them", "him"}
_END_PUNCT = re.compile(r"(\.|,|\?|\!)$")


def _clean_words(text: str) -> list[str]:
    """Lower-cased words of `text` split at single spaces, one trailing .,?! removed, empty ones dropped."""
    return [w for w in (_END_PUNCT.sub("", w) for w in text.strip().lower().split(" ")) if w]


def _prefix_in(hypothesis: list[str], words: list[str]) -> int:
    """Returns how many leading `words`, joined, are a substring of the joined hypothesis."""
    joined = " ".join(hypothesis)
    for i in range(len(words)):
        if " ".join(words[: i + 1]) not in joined:
            return i
    return len(words)


def _wnli_candidate(premise: list[str], hypothesis: list[str]) -> tuple[int, str]:
    """Returns (index in `premise` of the pronoun the hypothesis best replaces, the text replacing it).

    Each pronoun scores the words around it that the hypothesis repeats (before + after); the first best
    wins; the replacement is what the hypothesis has between those words (T5's heuristic, kept as it is,
    including regex-unescaped words and "no words before" meaning "all words before")."""
    best = None
    for i, word in enumerate(premise):
        if word not in _WNLI_PRONOUNS:
            continue
        before, after = premise[:i], premise[i + 1 :]
        n_before = _prefix_in(hypothesis[::-1], before[::-1])
        n_after = _prefix_in(hypothesis, after)
        if best is None or n_before + n_after > best[0]:
            best = (n_before + n_after, i, before[-n_before or len(before) :], after[:n_after])
    if best is None:
        raise ValueError("no pronoun")
    score, index, pre, post = best
    candidate = ""
    if score:
        text = " ".join(hypothesis)
        m = (
            re.search(" ".join([*pre, "(.+)", *post]), text)
            or re.search(" ".join(["^(.+)", *post]), text)
            or re.search(" ".join([*pre, "(.+)$"]), text)
        )
        candidate = m.group(1) if m else ""
    return index, candidate


def wnli_simple(ex: Example, ctx: Context) -> Example | None:
    """GLUE WNLI recast as T5's simple WSC (evaluation only): "wsc: {sentence1 with the *pronoun*}" ->
    the words of sentence2 that replace it ("The worm"), keeping the label for `wsc_referent_match`.

    Examples without a pronoun, or whose candidate is not found in sentence2, are dropped (T5 raises)."""
    premise, hypothesis = _text(ex["sentence1"]), _text(ex["sentence2"])
    try:
        index, candidate = _wnli_candidate(_clean_words(premise), _clean_words(hypothesis))
    except ValueError:
        return None
    words = candidate.split(" ")
    # A candidate that runs from the hypothesis' start to the referent starts again at its last article.
    start = max([words.index(a) for a in ("a", "an", "the") if a in words] or [0])
    pattern = "(" + " ".join(re.escape(w) + r"(?:\.|,|\?|\!)?" for w in words[start:]) + ")"
    m = re.search(pattern, hypothesis, re.IGNORECASE)
    if not m:
        return None
    target = m.group(1)
    if target and target[-1] in ".,!?":
        target = target[:-1]
    # WSC targets are never possessive, even where the pronoun is ("his" -> "Bob").
    target = target[:-1] if target.endswith("'") else target[:-2] if target.endswith("'s") else target
    raw = premise.split(" ")
    word = raw[index]
    raw[index] = f"*{word[:-1]}* {word[-1]}" if word[-1] in ".,!?" else f"*{word}*"
    return {
        "inputs": "wsc: " + " ".join(raw),
        "targets": target,
        "premise": premise,
        "hypothesis": hypothesis,
        "label": int(ex.get("label", 0)),
        "idx": ex.get("idx", -1),
    }
