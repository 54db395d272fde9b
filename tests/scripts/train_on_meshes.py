"""Run by tests/test_train_mesh.py: the training loop on two layouts of 8 fake devices.

Usage: XLA_FLAGS=--xla_force_host_platform_device_count=8 python tests/scripts/train_on_meshes.py OUT_DIR
Prints one JSON line: per mesh, the training losses and the first evaluation's metrics.
"""

import json
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # tests/, for test_train_loop

from test_train_loop import CONFIG, LENGTHS, TASK, VOCAB, reverse_examples

from mesh_t5 import data, optim, train
from mesh_t5.data import metrics
from mesh_t5.data import preprocessors as pp

data.TaskRegistry.add(
    TASK, data.FunctionSource(reverse_examples), [pp.tokenize, pp.append_eos_after_trim],
    {"inputs": data.Feature(VOCAB), "targets": data.Feature(VOCAB)}, metric_fns=[metrics.sequence_accuracy],
)  # fmt: skip
out = {}
for mesh in ("data:8", "data:2,model:4"):
    result = train.train(
        model_config=CONFIG, model_dir=f"{sys.argv[1]}/{mesh}", mixture_or_task_name=TASK,
        task_feature_lengths=LENGTHS, train_steps=3, batch_size=8, learning_rate=optim.constant_schedule(3e-2),
        tensorboard=False, progress=False, log_period=1, pack=False, eval_period=3, eval_decode_examples=8,
        mesh_shape=mesh,
    )  # fmt: skip
    out[mesh] = {"losses": [m["loss"] for _, m in result.history], "eval": result.eval_history[0][1]}
print(json.dumps(out))
