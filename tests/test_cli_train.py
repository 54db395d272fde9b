"""`mesh-t5 train` / `mesh-t5 eval` through mesh_t5.cli.main: gin wiring and one-line refusals."""

import os

import jax
import numpy as np
import pytest

from mesh_t5 import checkpoints, cli, data, optim, steps
from mesh_t5.config import T5Config
from mesh_t5.data import metrics
from mesh_t5.data import preprocessors as pp
from mesh_t5.vocab import ByteVocabulary

TASK = "test_cli_copy"
TINY_GIN = "models/tiny.gin"  # vocab 512, d_model 64, 2 + 2 layers, gated-gelu
TINY = T5Config(
    vocab_size=512, d_model=64, d_ff=128, num_heads=4, d_kv=16, num_encoder_layers=2, num_decoder_layers=2,
    feed_forward_proj="gated-gelu", tie_word_embeddings=False, dropout_rate=0.0,
)  # fmt: skip


def copy_examples(split):
    rng = np.random.default_rng({"train": 0, "validation": 1}[split])
    for _ in range(200 if split == "train" else 8):
        text = "".join(rng.choice(list("abcd"), size=4))
        yield {"inputs": text, "targets": text}


@pytest.fixture(scope="module", autouse=True)
def copy_task():
    vocab = ByteVocabulary(extra_ids=0)
    data.TaskRegistry.add(
        TASK,
        data.FunctionSource(copy_examples),
        [pp.tokenize, pp.append_eos_after_trim],
        {"inputs": data.Feature(vocab), "targets": data.Feature(vocab)},
        metric_fns=[metrics.sequence_accuracy],
        overwrite=True,
    )


def flags(model_dir, **macros):
    values = {
        "MODEL_DIR": str(model_dir), "MIXTURE_OR_TASK_NAME": TASK,
        "TASK_FEATURE_LENGTHS": "{'inputs': 8, 'targets': 8}", "TRAIN_STEPS": "2", "BATCH_SIZE": "4",
    }  # fmt: skip
    values.update(macros)
    return [f"--gin.{k}={v}" for k, v in values.items() if v is not None]


def run_cli(capsys, *argv):
    code = cli.main(list(argv))
    return code, capsys.readouterr().err.strip()


def listing(root):
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for name in files + dirs:
            path = os.path.join(dirpath, name)
            out[path] = os.stat(path).st_mtime_ns
    return out


def zero_state(config):
    abstract = steps.abstract_state(config, optim.make_optimizer())
    return jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), abstract)


def saved_run(model_dir, step, config=TINY):
    store = checkpoints.CheckpointStore(model_dir)
    store.save(step, {**zero_state(config), "step": np.int32(step)}, {"data": {}})
    store.close()
    return listing(model_dir)


def test_help_documents_the_macros(capsys):
    code = cli.main(["train", "--help"])
    out = capsys.readouterr().out
    assert code == 0 and "MODEL_DIR" in out and "runs/pretrain.gin" in out and "TRAIN_STEPS" in out


def test_missing_macro_is_named(tmp_path, capsys):
    code, err = run_cli(
        capsys,
        "train",
        f"--gin_file={TINY_GIN}",
        "--gin_file=runs/pretrain.gin",
        *flags(tmp_path, TRAIN_STEPS=None),
    )
    assert code == 2 and len(err.splitlines()) == 1
    assert "required gin macro TRAIN_STEPS is not set" in err
    assert not os.listdir(tmp_path)


def test_unknown_binding_is_one_line(tmp_path, capsys):
    code, err = run_cli(
        capsys, "train", f"--gin_file={TINY_GIN}", "--gin_file=runs/pretrain.gin", *flags(tmp_path),
        "--gin.train.learnin_rate=0.1",
    )  # fmt: skip
    assert code == 2 and len(err.splitlines()) == 1 and "learnin_rate" in err, err
    assert not os.listdir(tmp_path)


def test_train_steps_below_checkpoint_step_refused_and_checkpoints_untouched(tmp_path, capsys):
    before = saved_run(tmp_path, 5)
    code, err = run_cli(
        capsys,
        "train",
        f"--gin_file={TINY_GIN}",
        "--gin_file=runs/pretrain.gin",
        *flags(tmp_path, TRAIN_STEPS="3"),
    )
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "TRAIN_STEPS=3 is below the checkpoint's step 5" in err
    assert listing(tmp_path) == before


def test_checkpoint_that_does_not_fit_the_config_refused(tmp_path, capsys):
    # Resuming a run whose checkpoint was made with a different d_ff.
    before = saved_run(tmp_path / "run", 5, TINY.replace(d_ff=256))
    code, err = run_cli(
        capsys, "train", f"--gin_file={TINY_GIN}", "--gin_file=runs/pretrain.gin",
        *flags(tmp_path / "run", TRAIN_STEPS="10"),
    )  # fmt: skip
    assert code == 2 and len(err.splitlines()) == 1, err
    assert (
        "parameter decoder/layers/mlp/wi_0 has shape (2, 64, 256) but the model config needs (2, 64, 128)"
        in err
    )
    assert listing(tmp_path / "run") == before
    # Fine-tuning from a pre-trained model dir of another size: refused, nothing written anywhere.
    pretrained = tmp_path / "pretrained"
    checkpoints.save_model(
        pretrained, TINY.replace(d_model=32), zero_state(TINY.replace(d_model=32))["params"], None
    )
    before_pretrained = listing(pretrained)
    code, err = run_cli(
        capsys, "train", f"--gin_file={TINY_GIN}", "--gin_file=runs/finetune.gin",
        *flags(tmp_path / "finetune", TRAIN_STEPS="10", INIT_CHECKPOINT=str(pretrained)),
    )  # fmt: skip
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "parameter decoder/final_norm/scale has shape (32,) but the model config needs (64,)" in err
    assert listing(pretrained) == before_pretrained
    assert not (tmp_path / "finetune").exists()


def test_train_then_eval_through_the_cli(tmp_path, capsys):
    run = tmp_path / "run"
    code, err = run_cli(
        capsys, "train", f"--gin_file={TINY_GIN}", "--gin_file=runs/finetune.gin", *flags(run, TRAIN_STEPS="3"),
        "--gin.train.tensorboard=False", "--gin.train.eval_period=0", "--gin.train.log_period=1",
    )  # fmt: skip
    assert code == 0, err
    assert "step 3" in err
    assert checkpoints.CheckpointStore(run).all_steps() == [3]
    assert (run / "operative_config.gin").read_text().count("constant_schedule.value = 0.001") == 1
    code, err = run_cli(
        capsys, "eval", "--gin_file=runs/eval.gin", f"--gin.CHECKPOINT_PATH={run}", f"--gin.MIXTURE_OR_TASK_NAME={TASK}",
        "--gin.TASK_FEATURE_LENGTHS={'inputs': 8, 'targets': 8}", "--gin.BATCH_SIZE=4",
    )  # fmt: skip
    assert code == 0, err
    assert err.startswith("step 3: ") and f"{TASK}/sequence_accuracy" in err and "loss" in err
