"""The training loop on a fake 8-device mesh gives the single-layout losses (slow: a subprocess
compiles two layouts; the layouts tests cover the train step's parity on meshes by default)."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import json, sys
    sys.path.insert(0, sys.argv[2])
    from test_train_loop import CONFIG, LENGTHS, TASK, VOCAB, reverse_examples
    from mesh_t5 import data, optim, train
    from mesh_t5.data import metrics, preprocessors as pp
    data.TaskRegistry.add(
        TASK, data.FunctionSource(reverse_examples), [pp.tokenize, pp.append_eos_after_trim],
        {"inputs": data.Feature(VOCAB), "targets": data.Feature(VOCAB)}, metric_fns=[metrics.sequence_accuracy],
    )
    out = {}
    for mesh in ("data:8", "data:2,model:4"):
        result = train.train(
            model_config=CONFIG, model_dir=f"{sys.argv[1]}/{mesh}", mixture_or_task_name=TASK,
            task_feature_lengths=LENGTHS, train_steps=3, batch_size=8, learning_rate=optim.constant_schedule(3e-2),
            tensorboard=False, progress=False, log_period=1, pack=False, eval_period=3, eval_decode_examples=8,
            mesh_shape=mesh,
        )
        out[mesh] = {"losses": [m["loss"] for _, m in result.history], "eval": result.eval_history[0][1]}
    print(json.dumps(out))
    """
)


@pytest.mark.slow
def test_loop_on_meshes_matches(tmp_path):
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    tests_dir = os.path.dirname(__file__)
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path), tests_dir],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    a, b = out["data:8"], out["data:2,model:4"]
    assert a["losses"][-1] < a["losses"][0]
    for x, y in zip(a["losses"], b["losses"], strict=True):
        assert x == pytest.approx(y, rel=1e-5)
    assert a["eval"]["loss"] == pytest.approx(b["eval"]["loss"], rel=1e-5)
