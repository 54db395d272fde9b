"""`mesh-t5 export`: a TensorFlow SavedModel (strings in, strings out) of a mesh_t5 or Hugging Face model."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from mesh_t5 import gin_utils, validate
from mesh_t5.commands.ensemble import check_ensemble, split_checkpoints
from mesh_t5.config import DecodeOptions
from mesh_t5.errors import UserError


def build_parser() -> argparse.ArgumentParser:
    parser = validate.ArgumentParser(
        prog="mesh-t5 export",
        description="Write a TF SavedModel whose serving_default signature maps a batch of strings to "
        "decoded strings and scores (tokenization inside the graph), plus a `score` signature.",
    )
    gin_utils.add_gin_flags(parser)
    parser.add_argument(
        "--checkpoint",
        action="append",
        default=None,
        help="mesh_t5 model/training dir or Hugging Face T5 dir (or --gin.CHECKPOINT_PATH); repeat it, or "
        "separate dirs by commas, to export an ensemble (mean per-token log-probabilities)",
    )
    parser.add_argument("--output_dir", default=None, help="new or empty directory for the SavedModel")
    # An export decodes greedily or by beam search: no sampling flags.
    gin_utils.add_field_flags(parser, DecodeOptions, ("max_decode_length", "beam_size", "alpha"))
    parser.add_argument(
        "--max_input_length", type=int, default=512, help="input tokens incl. EOS (default 512)"
    )
    parser.add_argument(
        "--vocab", default=None, help="SentencePiece .model to use instead of the model's own, or 'byte'"
    )
    parser.add_argument(
        "--platforms",
        default=None,
        help="comma-separated platforms to serve on, e.g. cpu,cuda,tpu (default: this one)",
    )
    return parser


def main(argv: Sequence[str]) -> int:
    args, bindings = gin_utils.parse_flags(build_parser(), argv)
    checkpoint = args.checkpoint
    output_dir = args.output_dir
    if args.gin_file or bindings:
        gin_utils.configure(args, bindings, finalize=False)
        checkpoint = checkpoint or gin_utils.query_macro("CHECKPOINT_PATH", required=False)
        output_dir = output_dir or gin_utils.query_macro("EXPORT_DIR", required=False)
    checkpoints = split_checkpoints(checkpoint)
    if not checkpoints:
        raise UserError("no model given; pass --checkpoint=DIR (or --gin.CHECKPOINT_PATH=DIR)")
    if not output_dir:
        raise UserError("no output directory given; pass --output_dir=DIR")

    from mesh_t5 import export
    from mesh_t5.model import T5Model
    from mesh_t5.vocab import BYTE_VOCABULARY_NAMES, load_vocabulary

    # Everything is checked before the model loads and before the output dir is made.
    for member in checkpoints:
        validate.input_dir(member, "--checkpoint", "pass a mesh_t5 or Hugging Face T5 model dir")
    export.check_output_dir(str(output_dir))
    platforms = [p.strip() for p in args.platforms.split(",")] if args.platforms is not None else None
    options = DecodeOptions(**gin_utils.flag_values(args, DecodeOptions))
    export.check_arguments(options, args.max_input_length, platforms)
    if args.vocab and args.vocab not in BYTE_VOCABULARY_NAMES:
        validate.input_file(args.vocab, "--vocab", "pass --vocab=byte or a SentencePiece .model file")
    vocabulary = load_vocabulary(args.vocab) if args.vocab else None
    models = [T5Model.from_pretrained(c) for c in checkpoints]
    check_ensemble(models, checkpoints)
    path = export.export_saved_model(
        models[0], str(output_dir), options, max_input_length=args.max_input_length, vocabulary=vocabulary,
        platforms=platforms, ensemble=models[1:],
    )  # fmt: skip
    print(f"wrote SavedModel to {path} (signatures: serving_default, score)", file=sys.stderr)
    return 0
