"""`mesh-t5 infer`: predict outputs for inputs, or score given targets, with a saved model.

Inputs come from a file (JSONL objects with "inputs" and optional "targets"; TSV lines
`inputs[<TAB>targets]`; any other file: one input per line) or from a registered task's split.
Results go to a JSONL file, one object per example: predict mode writes inputs, targets (when
known), outputs and score (summed log-probability; divided by the length penalty under beam
search); score mode writes inputs, targets and score (log-likelihood of the targets incl. EOS).
With --task, each object also has "task" and "index" (the example's position in the split), which
`mesh-t5 eval --predictions=FILE` uses to match predictions to targets.

Several checkpoints (`--checkpoint=A --checkpoint=B`, or `--checkpoint=A,B`) are an ensemble: every
decoding step and every score uses the mean of the members' per-token log-probabilities (the paper's
Table 13); the members must share one config and vocabulary.

Every flag can also be bound by gin as `infer.<flag>` (`--gin.infer.beam_size=4`, or in a
`--gin_file`); a flag on the command line wins over gin.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from mesh_t5 import gin_utils, validate
from mesh_t5.commands.ensemble import check_ensemble, split_checkpoints
from mesh_t5.config import DecodeOptions, option
from mesh_t5.errors import UserError

MODES = ("predict", "score")


@dataclasses.dataclass(frozen=True)
class InferSettings(DecodeOptions):
    """`mesh-t5 infer`'s settings: one flag each, also bound by gin as `infer.NAME`. The decoding ones
    (and their checks) are DecodeOptions' fields, inherited."""

    checkpoint: str | Sequence[str] | None = option(
        None, "a mesh_t5 model/training dir or a Hugging Face T5 dir; repeat it (or separate dirs by "
        "commas) for an ensemble", action="append",
    )  # fmt: skip
    mode: str = option("predict", "predict (decode outputs) or score (log-likelihood of given targets)")
    input_file: str | None = option(
        None, "JSONL ({'inputs', 'targets'}), TSV (inputs[\\ttargets]) or text (one input per line)"
    )
    task: str | None = option(None, "a registered task whose split to run (instead of --input_file)")
    split: str = option("validation", "the task split (default validation)")
    output_file: str | None = option(None, "where to write predictions JSONL (default: stdout)")
    overwrite: bool = option(False, "replace an existing --output_file")
    vocab: str | None = option(
        None, "'byte' or a SentencePiece .model (default: the checkpoint's, else the task's)"
    )
    batch_size: int = option(32, "examples per decoding batch (default 32; the last batch is padded)")
    max_input_length: int = option(
        512, "inputs longer than this (tokens incl. EOS) are truncated (default 512)"
    )
    max_target_length: int = option(512, "score mode: targets longer than this are truncated (default 512)")
    mesh_shape: str | None = option(None, 'lay the model out on a device mesh, e.g. "data:2,model:4"')
    layout_rules: str | None = option(None, "logical-axis to mesh-axis rules (default: mesh_t5's)")
    limit: int | None = option(None, "run only the first N examples", type=int)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise UserError(f"--mode={self.mode!r} is unknown; use predict or score")
        super().__post_init__()
        for name in ("batch_size", "max_input_length", "max_target_length"):
            validate.integer(getattr(self, name), f"--{name}")
        validate.optional_integer(self.limit, "--limit")
        validate.boolean(self.overwrite, "--overwrite")

    def decode_options(self) -> DecodeOptions:
        """Returns the DecodeOptions part of these settings."""
        return DecodeOptions(**{f.name: getattr(self, f.name) for f in dataclasses.fields(DecodeOptions)})


CONFIGURABLES: dict[str, Any] = {"infer": InferSettings}


def build_parser() -> argparse.ArgumentParser:
    parser = validate.ArgumentParser(
        prog="mesh-t5 infer",
        description="Predict outputs for inputs (greedy, beam search or sampling), or score given targets.",
    )
    gin_utils.add_gin_flags(parser)
    gin_utils.add_field_flags(parser, InferSettings)
    return parser


def _read_file(path: str) -> list[dict[str, str]]:
    """Returns [{"inputs": ..., "targets"?: ...}] from a JSONL, TSV or text file."""
    examples = []
    text = validate.read_text(path, "--input_file")
    with io.StringIO(text, newline=None) as f:  # universal newlines, as open()
        for n, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if path.endswith((".jsonl", ".json")):
                if not line.strip():
                    continue
                try:
                    ex = json.loads(line)
                except json.JSONDecodeError:
                    raise UserError(f"{path}:{n} is not valid JSON; write one object per line") from None
                if not isinstance(ex, dict) or not isinstance(ex.get("inputs"), str):
                    raise UserError(
                        f'{path}:{n} has no string "inputs"; write {{"inputs": ..., "targets": ...}}'
                    )
                examples.append({k: str(ex[k]) for k in ("inputs", "targets") if k in ex})
            elif path.endswith(".tsv"):
                fields = line.split("\t")
                if len(fields) > 2:
                    raise UserError(
                        f"{path}:{n} has {len(fields)} tab-separated fields; write inputs[TAB targets]"
                    )
                examples.append(dict(zip(("inputs", "targets"), fields, strict=False)))
            else:
                examples.append({"inputs": line})
    return examples


def _read_task(name: str, split: str, vocab: Any) -> tuple[list[dict[str, Any]], Any]:
    """Returns ([{"inputs", "targets"?, "input_ids", "target_ids"?}], the task's targets vocabulary)."""
    from mesh_t5 import data

    task = data.get_mixture_or_task(name)  # a Task with inputs: checked by _check_settings
    vocab = vocab or task.output_features["inputs"].vocabulary
    examples = []
    for index, ex in enumerate(data.eval_examples(task, split)):
        row: dict[str, Any] = {"task": name, "index": index, "input_ids": [int(t) for t in ex["inputs"]]}
        row["inputs"] = ex.get("inputs_pretokenized") or vocab.decode(row["input_ids"])
        if "targets" in ex:
            row["target_ids"] = [int(t) for t in ex["targets"]]
            row["targets"] = ex.get("targets_pretokenized") or vocab.decode(row["target_ids"])
        examples.append(row)
    return examples, vocab


def _open_output(path: str | None, overwrite: bool) -> Any:
    if path is None or path == "-":
        return sys.stdout
    validate.output_file(path, "--output_file", overwrite=overwrite)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    return open(path, "w", encoding="utf-8")


def resolve_settings(argv: Sequence[str]) -> InferSettings:
    """Returns the settings of a command line: flags over gin bindings (`infer.NAME`) over defaults."""
    args, bindings = gin_utils.parse_flags(build_parser(), argv)
    configurables = gin_utils.configure(args, bindings, CONFIGURABLES)
    return gin_utils.call(configurables["infer"], **gin_utils.flag_values(args, InferSettings))


def _check_settings(s: InferSettings) -> None:
    """Refuses (one line) the files, task and mesh no run can use, before anything loads."""
    for checkpoint in split_checkpoints(s.checkpoint):
        validate.input_dir(checkpoint, "--checkpoint", "pass a mesh_t5 or Hugging Face T5 model dir")
    if s.vocab is not None:
        from mesh_t5.vocab import BYTE_VOCABULARY_NAMES

        if s.vocab not in BYTE_VOCABULARY_NAMES:
            validate.input_file(s.vocab, "--vocab", "pass --vocab=byte or a SentencePiece .model file")
    if s.input_file is not None:
        validate.input_file(s.input_file, "--input_file")
    if s.task is not None:
        from mesh_t5 import data

        task = data.get_mixture_or_task(s.task)
        if not isinstance(task, data.Task):
            raise UserError(f"{s.task!r} is a mixture; pass one of its tasks with --task")
        if "inputs" not in task.output_features:
            raise UserError(f"task {s.task!r} has no inputs feature; infer needs inputs to condition on")
    if s.mesh_shape is not None or s.layout_rules is not None:
        from mesh_t5 import layouts  # imports jax: only when a layout is asked for

        for name in ("mesh_shape", "layout_rules"):
            if getattr(s, name) is not None:
                validate.text(getattr(s, name), f"--{name}")
        layouts.make_layout(s.mesh_shape, s.layout_rules)  # the mesh must fit the devices


def _require_targets(examples: list[dict[str, Any]], key: str) -> None:
    missing = sum(key not in ex for ex in examples)
    if missing:
        raise UserError(
            f"score mode needs targets; {missing} of {len(examples)} examples have none "
            "(give inputs<TAB>targets)"
        )


def main(argv: Sequence[str]) -> int:
    s = resolve_settings(argv)
    checkpoints = split_checkpoints(s.checkpoint)
    if not checkpoints:
        raise UserError("no model given; pass --checkpoint=DIR (a mesh_t5 or Hugging Face T5 dir)")
    if (s.input_file is None) == (s.task is None):
        raise UserError("give exactly one of --input_file=PATH and --task=NAME")
    if s.task is None and s.split != "validation":
        raise UserError(
            f"--split={s.split} selects a split of --task=NAME; drop it, an --input_file has no splits"
        )
    _check_settings(s)
    out_path = s.output_file
    if out_path not in (None, "-"):
        validate.output_file(out_path, "--output_file", overwrite=s.overwrite)
    # Read the input and the vocabulary before loading the model: a bad file costs no model load.
    examples = _read_file(s.input_file) if s.input_file is not None else None
    if examples == []:
        raise UserError(f"--input_file {s.input_file} holds no examples; give one input per line")
    if s.mode == "score" and examples is not None:
        _require_targets(examples, "targets")
    from mesh_t5.vocab import load_vocabulary

    vocab = load_vocabulary(s.vocab) if s.vocab is not None else None

    from mesh_t5 import inference  # imports jax: after the flags are known to be sane
    from mesh_t5.model import T5Model

    models = [
        T5Model.from_pretrained(c, mesh_shape=s.mesh_shape, layout_rules=s.layout_rules) for c in checkpoints
    ]
    check_ensemble(models, checkpoints)
    model, params_list = models[0], [m.params for m in models]
    if vocab is None and model.vocab_path:  # else the task may supply one
        vocab = model.get_vocabulary()
    if s.task is not None:
        examples, vocab = _read_task(s.task, s.split, vocab)
    if vocab is None:
        raise UserError(
            f"{checkpoints[0]} has no vocabulary; pass --vocab=byte or a SentencePiece .model file"
        )
    validate.vocabulary_fits(vocab, model.config.vocab_size, "the vocabulary")
    if s.limit is not None:
        examples = examples[: s.limit]
    for ex in examples:
        ex.setdefault("input_ids", inference.tokenize(vocab, [ex["inputs"]])[0])
        if "targets" in ex:
            ex.setdefault("target_ids", inference.tokenize(vocab, [ex["targets"]], "targets")[0])

    common = dict(max_input_length=s.max_input_length, batch_size=s.batch_size, layout=model.layout)
    inputs = [ex["input_ids"] for ex in examples]
    if s.mode == "score":
        _require_targets(examples, "target_ids")
        targets = [ex["target_ids"] for ex in examples]
        scores = inference.score_ids(
            model.config, params_list, inputs, targets, max_target_length=s.max_target_length, **common
        )
        outputs = None
    else:
        ids, scores = inference.generate_ids(model.config, params_list, inputs, s.decode_options(), **common)
        outputs = vocab.decode_batch(ids.tolist())

    out = _open_output(out_path, s.overwrite)
    try:
        for i, ex in enumerate(examples):
            record: dict[str, Any] = {k: ex[k] for k in ("task", "index") if k in ex}
            record["inputs"] = ex["inputs"]
            if "targets" in ex:
                record["targets"] = ex["targets"]
            if outputs is not None:
                record["outputs"] = outputs[i]
            record["score"] = float(scores[i])
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
    finally:
        if out is not sys.stdout:
            out.close()
    if out is not sys.stdout:
        print(f"mesh-t5 infer: wrote {len(examples)} {s.mode} results to {out_path}", file=sys.stderr)
    return 0
