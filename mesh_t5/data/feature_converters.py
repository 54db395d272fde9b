"""Feature converters: task features ("inputs"/"targets") -> model features (t5x names), packed or padded.

- "enc_dec": encoder_input_tokens [L_in], decoder_target_tokens / decoder_input_tokens /
  decoder_loss_weights [L_tgt]; packed adds encoder_/decoder_segment_ids and _positions.
- "lm" (decoder-only): decoder sequence = inputs + targets under one causal mask (Mesh-TF T5's
  "delimited_lm" for supervised tasks), of length L_in + L_tgt when task_feature_lengths has inputs,
  else L_tgt; a task without inputs (C4 language modeling) gives its targets alone.
- "prefix_lm": the same sequence plus decoder_causal_attention (1 over the inputs and the first
  target position: the inputs are a fully visible prefix; seqio's PrefixLMFeatureConverter).
Both decoder-only kinds weigh the loss on the targets only unless loss_on_targets_only=False (Mesh-TF's
delimited_lm trained on the whole sequence). An example longer than the row keeps at least one target
token (its inputs are cut first), so the weights and the mask always tell inputs from targets.

Packing: greedy first-fit. Each example goes into the first open row where it fits; when none
does, a new row opens, and when more than `pack_window` rows are open the oldest is emitted.
Segment ids count from 1, positions restart at 0 per segment, and decoder_input_tokens are the
targets shifted right with 0 at each segment start.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np

from mesh_t5.data.stream import Stream
from mesh_t5.errors import UserError

log = logging.getLogger("mesh_t5.data")

CONVERTERS = ("enc_dec", "lm", "prefix_lm")


def _shift_right(tokens: np.ndarray) -> np.ndarray:
    """[T] -> [T]: 0 then tokens[:-1] (the decoder starts from PAD)."""
    return np.concatenate([np.zeros(1, np.int32), tokens[:-1]]).astype(np.int32)


class FeatureConverter:
    """Turns example dicts into rows of model features (see module docstring)."""

    def __init__(self, kind: str = "enc_dec", pack: bool = True, loss_on_targets_only: bool = True):
        if kind not in CONVERTERS:
            raise UserError(f"feature_converter={kind!r} is unknown; pick one of {', '.join(CONVERTERS)}")
        self.kind, self.pack, self.loss_on_targets_only = kind, pack, loss_on_targets_only
        self.truncated = 0
        self.dropped = 0

    def model_lengths(self, task_lengths: Mapping[str, int]) -> dict[str, int]:
        """Returns {"encoder": L, "decoder": L} (only the parts this converter has)."""
        missing = [
            k for k in (("inputs", "targets") if self.kind != "lm" else ("targets",)) if k not in task_lengths
        ]  # fmt: skip
        if missing:
            raise UserError(
                f"task_feature_lengths needs {', '.join(missing)} for feature_converter={self.kind!r}"
            )
        if self.kind == "enc_dec":
            return {"encoder": int(task_lengths["inputs"]), "decoder": int(task_lengths["targets"])}
        return {"decoder": int(task_lengths.get("inputs", 0)) + int(task_lengths["targets"])}

    def segment(self, ex: Mapping[str, Any], lengths: Mapping[str, int]) -> dict[str, list[int]] | None:
        """Returns one example's parts {"inputs": [...], "targets": [...]} trimmed to fit a row.

        lm / prefix_lm: the inputs are trimmed first so that at least one target token stays; a prefix_lm
        example without targets gives None (dropped, counted in `dropped`)."""
        targets = np.asarray(ex["targets"], dtype=np.int32).reshape(-1)
        inputs = np.asarray(ex.get("inputs", ()), dtype=np.int32).reshape(-1)
        if self.kind == "enc_dec":
            if len(inputs) > lengths["encoder"] or len(targets) > lengths["decoder"]:
                self.truncated += 1
            return {
                "inputs": inputs[: lengths["encoder"]].tolist(),
                "targets": targets[: lengths["decoder"]].tolist(),
            }
        room = lengths["decoder"]
        if len(targets) == 0 and self.kind == "prefix_lm":
            # Nothing to predict, and no first target position for decoder_causal_attention to mark.
            if not self.dropped:
                log.warning("prefix_lm: examples without targets are dropped (count in converter.dropped)")
            self.dropped += 1
            return None
        if len(inputs) + len(targets) > room:
            self.truncated += 1
        # Keep at least one target position: were the targets cut away entirely, the causal mask
        # (inputs + the first target position) would claim one input token as a target.
        inputs = inputs[: room - min(len(targets), 1)]
        return {"inputs": inputs.tolist(), "targets": targets[: room - len(inputs)].tolist()}

    def sizes(self, seg: Mapping[str, list[int]]) -> dict[str, int]:
        if self.kind == "enc_dec":
            return {"encoder": len(seg["inputs"]), "decoder": len(seg["targets"])}
        return {"decoder": len(seg["inputs"]) + len(seg["targets"])}

    def make_row(
        self, segments: list[dict[str, list[int]]], lengths: Mapping[str, int]
    ) -> dict[str, np.ndarray]:
        """Returns the model features of one row holding `segments` (padded with 0)."""
        feats: dict[str, np.ndarray] = {}
        dec_len = lengths["decoder"]
        dec_tgt, dec_in, dec_w, dec_seg, dec_pos, causal = [], [], [], [], [], []
        enc_tok, enc_seg, enc_pos = [], [], []
        for s, seg in enumerate(segments, 1):
            if self.kind == "enc_dec":
                n_in = len(seg["inputs"])
                enc_tok += seg["inputs"]
                enc_seg += [s] * n_in
                enc_pos += range(n_in)
            prefix = seg["inputs"] if self.kind != "enc_dec" else []
            seq = np.asarray(prefix + seg["targets"], dtype=np.int32)  # [n]
            n = len(seq)
            dec_tgt.append(seq)
            dec_in.append(_shift_right(seq))
            w = np.arange(n) >= len(prefix) if self.loss_on_targets_only else np.ones(n, bool)
            if self.kind == "prefix_lm":
                causal.append((np.arange(n) <= len(prefix)).astype(np.int32))  # inputs + first target
            dec_w.append((w & (seq != 0)).astype(np.int32))
            dec_seg.append(np.full(n, s, np.int32))
            dec_pos.append(np.arange(n, dtype=np.int32))

        def pad(parts: list, length: int) -> np.ndarray:
            flat = np.concatenate(parts).astype(np.int32) if parts else np.zeros(0, np.int32)
            return np.pad(flat, (0, length - len(flat)))  # [length]

        if self.kind == "enc_dec":
            enc_len = lengths["encoder"]
            feats["encoder_input_tokens"] = pad([np.asarray(enc_tok, np.int32)], enc_len)
            if self.pack:
                feats["encoder_segment_ids"] = pad([np.asarray(enc_seg, np.int32)], enc_len)
                feats["encoder_positions"] = pad([np.asarray(enc_pos, np.int32)], enc_len)
        feats["decoder_target_tokens"] = pad(dec_tgt, dec_len)
        feats["decoder_input_tokens"] = pad(dec_in, dec_len)
        feats["decoder_loss_weights"] = pad(dec_w, dec_len)
        if self.pack:
            feats["decoder_segment_ids"] = pad(dec_seg, dec_len)
            feats["decoder_positions"] = pad(dec_pos, dec_len)
        if self.kind == "prefix_lm":
            feats["decoder_causal_attention"] = pad(causal, dec_len)
        return feats


class ConvertedStream(Stream):
    """Yields model-feature rows from an example stream; packing buffers are part of the state."""

    def __init__(
        self,
        upstream: Stream,
        converter: FeatureConverter,
        task_feature_lengths: Mapping[str, int],
        pack_window: int = 8,
    ):
        self.upstream, self.converter = upstream, converter
        self.lengths = converter.model_lengths(task_feature_lengths)
        self.window = max(1, pack_window)
        self.open: list[list[dict[str, list[int]]]] = []  # rows being filled
        self.ready: list[list[dict[str, list[int]]]] = []  # full rows waiting to be emitted

    def _fits(self, row: list[dict], sizes: Mapping[str, int]) -> bool:
        for part, n in sizes.items():
            used = sum(self.converter.sizes(seg)[part] for seg in row)
            if used + n > self.lengths[part]:
                return False
        return True

    def __next__(self) -> dict[str, np.ndarray]:
        while not self.ready:
            try:
                ex = next(self.upstream)
            except StopIteration:
                if not self.open:
                    raise
                self.ready.append(self.open.pop(0))  # flush at the end of the data
                break
            seg = self.converter.segment(ex, self.lengths)
            if seg is None:
                continue
            if not self.converter.pack:
                self.ready.append([seg])
                break
            sizes = self.converter.sizes(seg)
            for row in self.open:
                if self._fits(row, sizes):
                    row.append(seg)
                    break
            else:
                self.open.append([seg])
                if len(self.open) > self.window:
                    self.ready.append(self.open.pop(0))
        return self.converter.make_row(self.ready.pop(0), self.lengths)

    def get_state(self) -> dict:
        return {"upstream": self.upstream.get_state(), "open": self.open, "ready": self.ready}

    def set_state(self, state: dict) -> None:
        self.upstream.set_state(state["upstream"])
        self.open = [[dict(seg) for seg in row] for row in state["open"]]
        self.ready = [[dict(seg) for seg in row] for row in state["ready"]]


def unpack(batch: Mapping[str, np.ndarray], kind: str = "enc_dec") -> list[dict[str, np.ndarray]]:
    """Returns the examples ({"inputs", "targets"} int32 arrays) held in a (packed or padded) batch
    ("lm": inputs told from targets by the loss weights, so converted with loss_on_targets_only)."""
    out = []
    dec = np.asarray(batch["decoder_target_tokens"])  # [B, T]
    packed = "decoder_segment_ids" in batch
    for b in range(dec.shape[0]):
        dseg = np.asarray(batch["decoder_segment_ids"][b]) if packed else (dec[b] != 0).astype(np.int32)
        ids = [s for s in np.unique(dseg) if s > 0]
        if kind == "enc_dec":
            eseg = (
                np.asarray(batch["encoder_segment_ids"][b])
                if packed
                else (np.asarray(batch["encoder_input_tokens"][b]) != 0).astype(np.int32)
            )
            ids = sorted(set(ids) | {s for s in np.unique(eseg) if s > 0})
        for s in ids:
            tgt = dec[b][dseg == s]
            if kind == "enc_dec":
                out.append(
                    {"inputs": np.asarray(batch["encoder_input_tokens"][b])[eseg == s], "targets": tgt}
                )
            else:
                if kind == "prefix_lm":
                    n_in = int(np.asarray(batch["decoder_causal_attention"][b])[dseg == s].sum()) - 1
                else:  # lm: the inputs are the positions before the first loss-weighted one
                    w = np.asarray(batch["decoder_loss_weights"][b])[dseg == s]
                    n_in = int(np.argmax(w > 0)) if w.any() else 0
                out.append({"inputs": tgt[:n_in], "targets": tgt[n_in:]})
    return out
