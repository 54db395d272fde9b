"""The training loop end to end: a learnable task, exact resume, eval on decoded predictions."""

import jax
import numpy as np
import pytest

from mesh_t5 import checkpoints, data, inference, optim, steps, train
from mesh_t5.config import DecodeOptions, T5Config
from mesh_t5.data import metrics
from mesh_t5.data import preprocessors as pp
from mesh_t5.vocab import ByteVocabulary

ALPHABET = "abcdefgh"
VOCAB = ByteVocabulary(extra_ids=0)  # 259 ids: specials + bytes
CONFIG = T5Config(
    vocab_size=264, d_model=64, d_ff=128, num_heads=4, d_kv=16, num_encoder_layers=2, num_decoder_layers=2,
    feed_forward_proj="gated-gelu", tie_word_embeddings=False, dropout_rate=0.0,
)  # fmt: skip
LENGTHS = {"inputs": 8, "targets": 8}
TASK = "test_train_reverse"


def reverse_examples(split):
    # Deterministic per split: the validation strings never occur in training (seeded apart).
    rng = np.random.default_rng({"train": 0, "validation": 1}[split])
    for _ in range({"train": 4000, "validation": 48}[split]):
        text = "".join(rng.choice(list(ALPHABET), size=rng.integers(3, 7)))
        yield {"inputs": text, "targets": text[::-1]}


@pytest.fixture(scope="module", autouse=True)
def reverse_task():
    data.TaskRegistry.add(
        TASK,
        data.FunctionSource(reverse_examples, splits=("train", "validation")),
        [pp.tokenize, pp.append_eos_after_trim],
        {"inputs": data.Feature(VOCAB), "targets": data.Feature(VOCAB)},
        metric_fns=[metrics.sequence_accuracy],
        overwrite=True,
    )
    yield


def run(model_dir, train_steps, **overrides):
    kwargs = dict(
        model_config=CONFIG, model_dir=str(model_dir), mixture_or_task_name=TASK, task_feature_lengths=LENGTHS,
        train_steps=train_steps, batch_size=32, learning_rate=optim.constant_schedule(3e-2),
        checkpoint_period=1000, tensorboard=False, progress=False, log_period=25, pack=False, z_loss=0.0,
    )  # fmt: skip
    kwargs.update(overrides)
    return train.train(**kwargs)


def test_learns_to_reverse_and_decodes_held_out_strings(tmp_path):
    # Measured: the logged loss falls from 1.5 (step 25) to ~0.04 at step 250; 94% of held-out strings
    # come back exactly reversed at step 300.
    result = run(tmp_path, 250, eval_period=250, eval_decode_examples=48, tensorboard=True)
    losses = [m["loss"] for _, m in result.history]
    assert losses[0] > 1.0 and losses[-1] < 0.15, losses
    ((step, evaluation),) = result.eval_history
    assert step == 250
    assert evaluation["loss"] < 0.2
    # Greedy decoding reproduces the reversed held-out strings.
    assert evaluation[f"{TASK}/sequence_accuracy"] >= 80.0, evaluation
    # The run dir: config, a checkpoint at the end, TensorBoard events for train and eval.
    assert checkpoints.read_config(tmp_path) == CONFIG
    assert checkpoints.CheckpointStore(tmp_path).all_steps() == [250]
    from mesh_t5.logging_utils import read_scalars

    scalars = read_scalars(str(tmp_path / "train"))
    assert {"loss", "learning_rate", "tokens_per_second", "accuracy"} <= set(scalars)
    assert scalars["loss"][-1][0] == 250 and scalars["loss"][-1][1] == pytest.approx(losses[-1], rel=1e-6)
    eval_scalars = read_scalars(str(tmp_path / "eval"))
    assert eval_scalars[f"{TASK}/sequence_accuracy"][0][0] == 250
    # load_model on the training dir gives the final parameters.
    config, params, _ = checkpoints.load_model(tmp_path)
    ids = [[*VOCAB.encode("abcdh"), 1]]
    tokens = np.zeros((1, 8), np.int32)
    tokens[0, : len(ids[0])] = ids[0]
    out = inference.generate_tokens(config, params, tokens, DecodeOptions(max_decode_length=8))
    assert VOCAB.decode([t for t in out[0].tolist() if t > 1]) == "hdcba"


def test_interrupted_run_resumes_bitwise(tmp_path):
    config = CONFIG.replace(dropout_rate=0.1)  # dropout keys must be re-derived after a resume
    kwargs = dict(model_config=config, checkpoint_period=4, shuffle=True, pack=True)
    whole = run(tmp_path / "whole", 10, **kwargs)
    first = run(tmp_path / "split", 6, **kwargs)
    assert first.step == 6
    assert checkpoints.CheckpointStore(tmp_path / "split").all_steps() == [4, 6]
    resumed = run(tmp_path / "split", 10, **kwargs)
    assert resumed.step == 10
    for a, b in zip(jax.tree.leaves(whole.state), jax.tree.leaves(resumed.state), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # The data pipeline state saved with the last checkpoint is the same too.
    store_a, store_b = (
        checkpoints.CheckpointStore(tmp_path / "whole"),
        checkpoints.CheckpointStore(tmp_path / "split"),
    )
    abstract = steps.abstract_state(config, optim.make_optimizer())
    _, meta_a = store_a.restore(10, abstract)
    _, meta_b = store_b.restore(10, abstract)
    assert meta_a["data"] == meta_b["data"]
