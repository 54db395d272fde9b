"""Run by tests/test_bad_inputs.py: on 3 fake devices, a mesh whose model axis does not divide the
model's dimensions is one line and exit 2 in every command that takes a mesh (train, eval, infer),
and one UserError in the Python API, with nothing written.

Usage: python tests/scripts/mesh_mistakes.py ROOT_DIR (sets the fake device count itself); prints one
JSON line {case: [exit code or "UserError", stderr or message], "unchanged": whether ROOT_DIR
is as it was before the commands}.
"""

import os

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=3"  # before jax is imported

import contextlib
import io
import json
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # tests/, for conftest

from conftest import tiny_config, tiny_params

from mesh_t5 import cli, data
from mesh_t5.data import preprocessors as pp
from mesh_t5.errors import UserError
from mesh_t5.model import T5Model
from mesh_t5.vocab import ByteVocabulary

TASK = "mesh_mistakes_copy"
vocab = ByteVocabulary(extra_ids=0)


def copy_examples(split):
    for text in ("ab", "cd", "abcd", "dcba") * 4:
        yield {"inputs": text, "targets": text}


data.TaskRegistry.add(
    TASK, data.FunctionSource(copy_examples), [pp.tokenize, pp.append_eos_after_trim],
    {"inputs": data.Feature(vocab), "targets": data.Feature(vocab)},
)  # fmt: skip
root = pathlib.Path(sys.argv[1])
(root / "byte").write_text("")
config = tiny_config(vocab_size=260)  # 4 heads, d_ff 64, vocab 260: a model axis of 3 divides none
T5Model(config, tiny_params(config), vocab_path=str(root / "byte")).save_pretrained(root / "model", "mesh_t5")
(root / "in.txt").write_text("ab\n")
lengths = "--gin.TASK_FEATURE_LENGTHS={'inputs': 8, 'targets': 8}"
cases = {
    "train": [
        "train", "--gin_file=models/tiny.gin", "--gin_file=runs/pretrain.gin", f"--gin.MODEL_DIR={root}/run",
        f"--gin.MIXTURE_OR_TASK_NAME={TASK}", "--gin.BATCH_SIZE=6", "--gin.TRAIN_STEPS=1", lengths,
        "--gin.train.mesh_shape=data:1,model:3",
    ],
    "eval": [
        "eval", "--gin_file=runs/eval.gin", f"--gin.CHECKPOINT_PATH={root}/model", f"--gin.MIXTURE_OR_TASK_NAME={TASK}",
        lengths, "--gin.BATCH_SIZE=6", "--gin.evaluate_checkpoints.mesh_shape=data:1,model:3",
    ],
    "infer": ["infer", f"--checkpoint={root}/model", f"--input_file={root}/in.txt", "--mesh_shape=data:1,model:3"],
}  # fmt: skip


def snapshot() -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}


before = snapshot()
out = {}
for name, argv in cases.items():
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = cli.main(argv)
    out[name] = [code, err.getvalue()]
try:
    T5Model.init(config, mesh_shape="data:1,model:3")
    out["T5Model.init"] = ["no error", ""]
except UserError as e:
    out["T5Model.init"] = ["UserError", str(e)]
out["unchanged"] = snapshot() == before  # no MODEL_DIR, eval dir or output file made or touched
print(json.dumps(out))
