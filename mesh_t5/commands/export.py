"""`mesh-t5 export`: a TensorFlow SavedModel (strings in, strings out) of a mesh_t5 or Hugging Face model."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from mesh_t5 import gin_utils, validate
from mesh_t5.commands.ensemble import check_ensemble, split_checkpoints
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
    parser.add_argument("--beam_size", type=int, default=1, help="1 = greedy (default), else beam search")
    parser.add_argument("--alpha", type=float, default=0.6, help="beam search length penalty (default 0.6)")
    parser.add_argument("--max_decode_length", type=int, default=64, help="output tokens (default 64)")
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
    rest, bindings = gin_utils.split_gin_bindings(argv)
    args = build_parser().parse_args(rest)
    checkpoint = args.checkpoint
    output_dir = args.output_dir
    if args.gin_file or bindings:
        gin_utils.parse_gin(args.gin_file, bindings, args.gin_search_paths, finalize=False)
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
    export.check_arguments(
        args.beam_size, args.max_decode_length, args.max_input_length, args.alpha, platforms
    )
    if args.vocab and args.vocab not in BYTE_VOCABULARY_NAMES:
        validate.input_file(args.vocab, "--vocab", "pass --vocab=byte or a SentencePiece .model file")
    vocabulary = load_vocabulary(args.vocab) if args.vocab else None
    models = [T5Model.from_pretrained(c) for c in checkpoints]
    check_ensemble(models, checkpoints)
    model = models[0]
    path = export.export_saved_model(
        model,
        str(output_dir),
        beam_size=args.beam_size,
        max_decode_length=args.max_decode_length,
        max_input_length=args.max_input_length,
        alpha=args.alpha,
        vocabulary=vocabulary,
        platforms=platforms,
        ensemble=models[1:],
    )
    print(f"wrote SavedModel to {path} (signatures: serving_default, score)", file=sys.stderr)
    return 0
