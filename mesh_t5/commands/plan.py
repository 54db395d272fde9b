"""`mesh-t5 plan`: per-device memory of a training step of a model on a mesh, without allocating it."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

from mesh_t5 import gin_utils, validate
from mesh_t5.config import MODEL_SIZES, T5Config, get_model_config
from mesh_t5.errors import UserError
from mesh_t5.layouts import DEFAULT_LAYOUT_RULES


def build_parser() -> argparse.ArgumentParser:
    parser = validate.ArgumentParser(
        prog="mesh-t5 plan",
        description="Per-device bytes of parameters, gradients, Adafactor state and activations of a "
        "training step on a mesh, from shapes only (the mesh need not exist here), and whether it fits.",
    )
    gin_utils.add_gin_flags(parser)
    parser.add_argument(
        "--model", default=None, help=f"a named size instead of --gin_file: {', '.join(MODEL_SIZES)}"
    )
    parser.add_argument("--mesh_shape", required=True, help='e.g. "data:16,model:32"')
    parser.add_argument("--layout_rules", default=None, help=f"default {DEFAULT_LAYOUT_RULES}")
    parser.add_argument(
        "--device_memory", default="16GiB", help="memory of one device (default 16GiB, a TPU v3 core)"
    )
    parser.add_argument("--batch_size", type=int, default=128, help="global batch size (default 128)")
    parser.add_argument("--input_length", type=int, default=512, help="encoder length (default 512)")
    parser.add_argument("--target_length", type=int, default=114, help="decoder length (default 114)")
    return parser


def _model_config(args: argparse.Namespace, bindings: list[str]) -> tuple[T5Config, str]:
    """The T5Config of --model (plus `--gin.T5Config.FIELD=VALUE` overrides) or of the gin files."""
    import gin

    if args.model:
        if args.gin_file:
            raise UserError("give --model or --gin_file, not both")
        config = get_model_config(args.model)
        for binding in bindings:
            name, _, value = (part.strip() for part in binding.partition("="))
            if not name.startswith("T5Config."):
                raise UserError(
                    f"with --model only --gin.T5Config.FIELD=VALUE overrides apply, not --gin.{name}"
                )
            config = T5Config.from_dict(
                {**config.to_dict(), name.removeprefix("T5Config."): gin.config.parse_value(value)}
            )
        return config, args.model
    if not args.gin_file:
        raise UserError("no model given; pass --gin_file=models/t5_3B.gin (or --model=t5-3b)")
    gin_utils.configure(args, bindings)
    reference = gin_utils.query_macro("MODEL_CONFIG")
    config = reference.scoped_configurable_fn() if hasattr(reference, "scoped_configurable_fn") else reference
    if not isinstance(config, T5Config):
        raise UserError("gin macro MODEL_CONFIG is not a @T5Config(); bind MODEL_CONFIG = @T5Config()")
    name = ",".join(os.path.splitext(os.path.basename(f))[0] for f in args.gin_file)
    return config, name


def main(argv: Sequence[str]) -> int:
    args, bindings = gin_utils.parse_flags(build_parser(), argv)
    for flag in ("batch_size", "input_length", "target_length"):
        if getattr(args, flag) < 1:
            raise UserError(f"--{flag}={getattr(args, flag)} must be >= 1")
    config, name = _model_config(args, bindings)
    from mesh_t5.plan import plan_memory  # imports jax: after the flags are known to be sane

    plan = plan_memory(
        config,
        args.mesh_shape,
        args.layout_rules,
        batch_size=args.batch_size,
        input_length=args.input_length,
        target_length=args.target_length,
        device_memory=args.device_memory,
        model_name=name,
    )
    print(plan.format())
    return 0
