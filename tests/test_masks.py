"""Attention masks by perturbation: causality, the prefix-LM prefix, packing, encoder padding."""

from __future__ import annotations

import numpy as np
from conftest import jitted_forward, tiny_config, tiny_params


def _logits(config, batch):
    return np.asarray(jitted_forward(config)(tiny_params(config), batch))


def test_decoder_only_is_causal() -> None:
    config = tiny_config(architecture="decoder_only")
    tokens = np.random.RandomState(0).randint(2, 64, size=(1, 8)).astype(np.int32)
    changed = tokens.copy()
    changed[0, 5] = (tokens[0, 5] + 7) % 62 + 2
    a, b = (
        _logits(config, {"decoder_input_tokens": tokens}),
        _logits(config, {"decoder_input_tokens": changed}),
    )
    np.testing.assert_allclose(a[:, :5], b[:, :5], atol=1e-6)
    assert np.abs(a[:, 5:] - b[:, 5:]).max() > 1e-3


def test_prefix_lm_prefix_is_fully_visible_and_targets_causal() -> None:
    config = tiny_config(architecture="prefix_lm")
    tokens = np.random.RandomState(1).randint(2, 64, size=(1, 8)).astype(np.int32)
    causal_attention = np.array([[1, 1, 1, 1, 0, 0, 0, 0]], np.int32)

    def run(t: np.ndarray) -> np.ndarray:
        return _logits(config, {"decoder_input_tokens": t, "decoder_causal_attention": causal_attention})

    base = run(tokens)
    later_prefix = tokens.copy()
    later_prefix[0, 3] = (tokens[0, 3] + 5) % 62 + 2
    out = run(later_prefix)
    assert np.abs(out[:, :3] - base[:, :3]).max() > 1e-3  # earlier prefix positions see position 3
    later_target = tokens.copy()
    later_target[0, 6] = (tokens[0, 6] + 5) % 62 + 2
    out = run(later_target)
    np.testing.assert_allclose(out[:, :6], base[:, :6], atol=1e-6)
    assert np.abs(out[:, 6:] - base[:, 6:]).max() > 1e-3


def _pack(rows: list[np.ndarray], length: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    tokens, segments, positions = (np.zeros((1, length), np.int32) for _ in range(3))
    at = 0
    for i, row in enumerate(rows):
        tokens[0, at : at + len(row)] = row
        segments[0, at : at + len(row)] = i + 1
        positions[0, at : at + len(row)] = np.arange(len(row))
        at += len(row)
    return tokens, segments, positions


def test_packed_encoder_decoder_equals_unpacked() -> None:
    config = tiny_config()
    rng = np.random.RandomState(2)
    inputs = [rng.randint(2, 64, size=n).astype(np.int32) for n in (5, 3, 4)]
    targets = [rng.randint(2, 64, size=n).astype(np.int32) for n in (3, 4, 2)]
    dec_inputs = [np.concatenate([[0], t[:-1]]).astype(np.int32) for t in targets]
    enc, enc_seg, enc_pos = _pack(inputs, 14)
    dec, dec_seg, dec_pos = _pack(dec_inputs, 10)
    packed = _logits(
        config,
        {
            "encoder_input_tokens": enc, "encoder_segment_ids": enc_seg, "encoder_positions": enc_pos,
            "decoder_input_tokens": dec, "decoder_segment_ids": dec_seg, "decoder_positions": dec_pos,
        },
    )  # fmt: skip
    at = 0
    for x, y in zip(inputs, dec_inputs, strict=True):
        alone = _logits(config, {"encoder_input_tokens": x[None], "decoder_input_tokens": y[None]})
        np.testing.assert_allclose(packed[0, at : at + len(y)], alone[0], atol=1e-5)
        at += len(y)


def test_packed_decoder_only_equals_unpacked() -> None:
    config = tiny_config(architecture="decoder_only")
    rng = np.random.RandomState(3)
    rows = [rng.randint(2, 64, size=n).astype(np.int32) for n in (4, 6)]
    tokens, seg, pos = _pack(rows, 12)
    packed = _logits(
        config, {"decoder_input_tokens": tokens, "decoder_segment_ids": seg, "decoder_positions": pos}
    )
    np.testing.assert_allclose(
        packed[0, 4:10], _logits(config, {"decoder_input_tokens": rows[1][None]})[0], atol=1e-5
    )


def test_encoder_padding_is_masked() -> None:
    config = tiny_config()
    rng = np.random.RandomState(4)
    enc = rng.randint(2, 64, size=(1, 5)).astype(np.int32)
    dec = rng.randint(2, 64, size=(1, 4)).astype(np.int32)
    short = _logits(config, {"encoder_input_tokens": enc, "decoder_input_tokens": dec})
    padded = _logits(
        config, {"encoder_input_tokens": np.pad(enc, ((0, 0), (0, 6))), "decoder_input_tokens": dec}
    )
    np.testing.assert_allclose(padded, short, atol=1e-5)
    assert padded.shape == (1, 4, 64)
