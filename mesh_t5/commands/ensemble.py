"""Several checkpoints on one command line (`--checkpoint=A --checkpoint=B` or `--checkpoint=A,B`): an
ensemble, for infer, eval and export. No gin here: eval imports it after a config may be locked."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mesh_t5.errors import UserError


def split_checkpoints(value: str | Sequence[str] | None) -> list[str]:
    """Returns the checkpoint dirs of a --checkpoint value: repeated flags and/or comma-separated dirs."""
    if not value:
        return []
    values = [value] if isinstance(value, str) else list(value)
    return [part.strip() for v in values for part in str(v).split(",") if part.strip()]


def check_ensemble(models: Sequence[Any], paths: Sequence[str]) -> None:
    """Refuses an ensemble whose members differ in architecture or vocabulary size (one line)."""
    for model, path in zip(models[1:], paths[1:], strict=True):
        if model.config != models[0].config:
            raise UserError(
                f"ensemble member {path} has another model config than {paths[0]}; an ensemble averages "
                "per-token log-probabilities, so its members must share one architecture and vocabulary"
            )
