"""`mesh-t5 convert`: Hugging Face T5 ⇄ mesh_t5 model dirs, and original Mesh-TF T5 checkpoints → either."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

import gin

from mesh_t5 import gin_utils, validate
from mesh_t5.errors import UserError

SOURCES = ("auto", "hf", "mesh_t5", "meshtf")


def build_parser() -> argparse.ArgumentParser:
    parser = validate.ArgumentParser(
        prog="mesh-t5 convert",
        description="Convert a checkpoint: Hugging Face T5 dir (safetensors) <-> mesh_t5 model dir, or an "
        "original Mesh-TensorFlow T5 checkpoint (e.g. gs://t5-data/pretrained_models/small, copied locally) "
        "-> either. For Mesh-TF the model sizes come from the tensors' shapes, completed by the "
        "operative_config.gin next to the checkpoint and by --gin_file / --gin.T5Config.FIELD=VALUE.",
    )
    gin_utils.add_gin_flags(parser)
    parser.add_argument(
        "--input", required=True, help="source: HF dir, mesh_t5 dir, or Mesh-TF checkpoint dir/prefix"
    )
    parser.add_argument("--output_dir", required=True, help="new or empty directory to write")
    parser.add_argument("--to", choices=("hf", "mesh_t5"), required=True, help="output format")
    parser.add_argument(
        "--from", dest="source", choices=SOURCES, default="auto", help="input format (default: detect)"
    )
    parser.add_argument("--vocab", default=None, help="SentencePiece .model to store with the output")
    parser.add_argument(
        "--operative_gin", default=None, help="the original run's operative_config.gin (Mesh-TF)"
    )
    return parser


def detect_source(path: str) -> str:
    """Returns "hf", "meshtf" or "mesh_t5" for the checkpoint at path (a UserError if it does not exist)."""
    from mesh_t5 import hf

    if os.path.isfile(path + ".index"):
        return "meshtf"
    validate.input_dir(
        path, "--input", "pass a HF dir, a mesh_t5 dir or a Mesh-TF checkpoint (dir or prefix)"
    )
    if hf.is_hf_dir(path):
        return "hf"
    if os.path.isfile(os.path.join(path, "checkpoint")) or any(
        f.endswith(".index") for f in os.listdir(path)
    ):
        return "meshtf"
    return "mesh_t5"


def main(argv: Sequence[str]) -> int:
    args, bindings = gin_utils.parse_flags(build_parser(), argv)
    validate.output_dir(args.output_dir, "--output_dir")
    if args.vocab is not None:
        validate.input_file(args.vocab, "--vocab", "pass a SentencePiece .model file")
    if args.operative_gin is not None:
        validate.input_file(args.operative_gin, "--operative_gin")
    detected = detect_source(args.input)
    source = args.source if args.source != "auto" else detected
    if source not in (detected, "meshtf"):  # Mesh-TF detection is a guess; its loader reports its own errors
        raise UserError(
            f"--input {args.input} is a {detected} dir, not {source}; pass --from={detected} or drop --from"
        )
    config_fields: dict[str, Any] = {}
    if args.gin_file or bindings:
        if source != "meshtf":
            raise UserError(
                "--gin_file / --gin.* apply to Mesh-TF checkpoints only; HF and mesh_t5 dirs carry their config"
            )
        gin_utils.configure(args, bindings, finalize=False)
        config_fields = gin.get_bindings("T5Config")  # the fields the gin files and flags bind

    from mesh_t5.model import T5Model

    if source == "meshtf":
        from mesh_t5 import meshtf

        config, params, step = meshtf.load(args.input, config_fields, args.operative_gin)
        model = T5Model(config, params, vocab_path=args.vocab)
        where = f"Mesh-TF checkpoint (global_step {step})" if step is not None else "Mesh-TF checkpoint"
    else:
        if not os.path.isdir(args.input):
            raise UserError(f"--input {args.input} does not exist; pass a HF dir or a mesh_t5 dir")
        model = T5Model.from_pretrained(args.input)
        if args.vocab:
            model.vocab_path = args.vocab
        where = "Hugging Face dir" if source == "hf" else "mesh_t5 dir"
    if args.vocab:
        from mesh_t5.vocab import load_vocabulary

        validate.vocabulary_fits(
            load_vocabulary(args.vocab), model.config.vocab_size, f"--vocab {args.vocab}"
        )
    if model.vocab_path is None:
        print("note: no vocabulary given (--vocab); the output has none", file=sys.stderr)
    model.save_pretrained(args.output_dir, format=args.to)
    print(f"converted {where} {args.input} -> {args.to} {args.output_dir}", file=sys.stderr)
    return 0
