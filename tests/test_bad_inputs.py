"""The catalogue of user mistakes: every one ends in exactly one line on stderr naming the problem and
what to do (or, in Python, one `UserError`), a non-zero exit, no traceback, and nothing created or
changed on disk. Each case fails before anything is compiled, so the catalogue runs in-process in
seconds; a few run as real subprocesses to prove what a shell sees.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import run_script, tiny_config, tiny_params

from mesh_t5 import cli, data, gin_utils, train
from mesh_t5.data import preprocessors as pp
from mesh_t5.errors import UserError
from mesh_t5.model import T5Model
from mesh_t5.vocab import ByteVocabulary

COPY, EMPTY, MIXTURE = "bad_inputs_copy", "bad_inputs_empty", "bad_inputs_mixture"
# Words of a one-line error that tell the user what to do.
ADVICE = (
    "pass", "pick", "use", "must", "give", "set", "write", "check", "fix", "convert", "lists", "drop", "make",
    "e.g.", "did you mean", "pad", "name", "map", "wrap",
)  # fmt: skip


def _copy_examples(split):
    for text in ("ab", "cd", "abcd", "dcba") * 4:
        yield {"inputs": text, "targets": text}


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """A directory of the things users point commands at, right and wrong."""
    vocab = ByteVocabulary(extra_ids=0)  # 259 ids
    for name, fn in ((COPY, _copy_examples), (EMPTY, lambda split: iter(()))):
        data.TaskRegistry.add(
            name, data.FunctionSource(fn), [pp.tokenize, pp.append_eos_after_trim],
            {"inputs": data.Feature(vocab), "targets": data.Feature(vocab)}, overwrite=True,
        )  # fmt: skip
    data.MixtureRegistry.add(MIXTURE, [(COPY, 1.0)], overwrite=True)
    r = tmp_path_factory.mktemp("bad_inputs")
    (r / "byte").write_text("")  # a model's vocab file named "byte" is the byte vocabulary (359 ids)
    config = tiny_config(vocab_size=128)  # smaller than the byte vocabulary: a mismatched pair
    T5Model(config, tiny_params(config), vocab_path=str(r / "byte")).save_pretrained(r / "model", "mesh_t5")
    (r / "in.txt").write_text("hello\nworld\n")
    (r / "empty.txt").write_text("")
    (r / "latin1.txt").write_bytes("café\n".encode("latin-1"))
    (r / "three.tsv").write_text("a\tb\tc\n")
    (r / "bad.jsonl").write_text('{"inputs": 3}\n')
    (r / "notjson.jsonl").write_text("{inputs\n")
    (r / "exists.jsonl").write_text("{}\n")
    (r / "garbage.model").write_text("not a sentencepiece model")
    (r / "afile").write_text("x")
    (r / "adir").mkdir()
    (r / "nonempty").mkdir()
    (r / "nonempty" / "x").write_text("x")
    (r / "badtasks.py").write_text("raise RuntimeError('boom in my task module')\n")
    (r / "badtasks.gin").write_text("import badtasks\n")
    (r / "bad.gin").write_text("train.batch_size = = 3\n")
    (r / "run" / "checkpoints").mkdir(parents=True)  # a training MODEL_DIR before its first checkpoint
    (r / "run" / "config.json").write_text(json.dumps(tiny_config(vocab_size=512).to_dict()))
    (r / "readonly").mkdir()
    return r


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """{path: (size, mtime_ns)} of everything under root."""
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(dirpath, name)
            st = os.stat(path)
            out[path] = (st.st_size, st.st_mtime_ns)
    return out


def check_line(err: str, needle: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err and needle in lines[0], err
    assert any(word in lines[0] for word in ADVICE), f"no advice in: {lines[0]}"
    return lines[0]


TRAIN = (
    "train --gin_file=models/tiny.gin --gin_file=runs/pretrain.gin --gin.MODEL_DIR={r}/run "
    f"--gin.MIXTURE_OR_TASK_NAME={COPY} --gin.BATCH_SIZE=8 --gin.TRAIN_STEPS=2 "
    "--gin.TASK_FEATURE_LENGTHS=\"{{'inputs': 8, 'targets': 8}}\" "
)
EVAL = (
    f"eval --gin_file=runs/eval.gin --gin.CHECKPOINT_PATH={{r}}/model --gin.MIXTURE_OR_TASK_NAME={COPY} "
    "--gin.TASK_FEATURE_LENGTHS=\"{{'inputs': 8, 'targets': 8}}\" --gin.BATCH_SIZE=4 "
)
INFER = "infer --checkpoint={r}/model --input_file={r}/in.txt "
EXPORT = "export --checkpoint={r}/model --output_dir={r}/saved "
CONVERT = "convert --input={r}/model --output_dir={r}/converted --to=hf "
PLAN = "plan --model=t5-small --mesh_shape=data:2 "

# (command line with {r} for the root, a piece of the expected line).
CLI_CASES = [
    # the dispatcher, flags and gin
    ("trian", "unknown command 'trian'"),
    ("train", "no --gin_file given"),
    (TRAIN + "--bogus_flag=1", "unknown flag '--bogus_flag=1'"),
    (TRAIN + "--gin.train.learnin_rate=0.1", "learnin_rate"),
    (TRAIN + "--gin_file=models/t5_huge.gin", "gin file 'models/t5_huge.gin' not found"),
    (TRAIN + "--gin_file={r}/adir", "is a directory"),
    (TRAIN + "--gin_file={r}/latin1.txt", "is not UTF-8"),
    (TRAIN + "--gin_file={r}/bad.gin", "bad.gin"),
    (TRAIN + "--gin_search_paths={r} --gin_file=badtasks.gin", "boom in my task module"),
    (TRAIN + "--gin_search_paths={r}/afile", "is not a directory"),
    (TRAIN + "--gin.train.learning_rate", "--gin.train.learning_rate has no value"),
    (TRAIN + "--gin.train.learning_rate=[1,", "is not a valid gin value"),
    (TRAIN + "--gin.train.learning_rate=@no_such_schedule()", "no configurable named 'no_such_schedule'"),
    # train: numbers
    (TRAIN + "--gin.TRAIN_STEPS=abc", "TRAIN_STEPS='abc' must be an integer >= 1"),
    (TRAIN + "--gin.TRAIN_STEPS=12abc", "TRAIN_STEPS='12abc' must be an integer"),
    (TRAIN + "--gin.TRAIN_STEPS=2.5", "TRAIN_STEPS=2.5 must be an integer"),
    (TRAIN + "--gin.TRAIN_STEPS=0", "TRAIN_STEPS=0 must be >= 1"),
    (TRAIN + "--gin.TRAIN_STEPS=True", "TRAIN_STEPS=True must be an integer"),
    (TRAIN + "--gin.MODEL_DIR=", "MODEL_DIR='' must be a path"),
    (TRAIN + "--gin.BATCH_SIZE=-4", "BATCH_SIZE=-4 must be >= 1"),
    (TRAIN + "--gin.TASK_FEATURE_LENGTHS=\"{{'inputs': 0, 'targets': 8}}\"", "['inputs']=0 must be >= 1"),
    (TRAIN + "--gin.TASK_FEATURE_LENGTHS=\"{{'inputs': -1, 'targets': 8}}\"", "['inputs']=-1 must be >= 1"),
    (TRAIN + "--gin.TASK_FEATURE_LENGTHS=512", "TASK_FEATURE_LENGTHS=512 must be a dict"),
    (TRAIN + "--gin.TASK_FEATURE_LENGTHS=\"{{'inputs': 8, 'target': 8}}\"", "names feature(s) 'target'"),
    (TRAIN + "--gin.TASK_FEATURE_LENGTHS=\"{{'inputs': 'x', 'targets': 8}}\"", "must be an integer"),
    (TRAIN + "--gin.train.checkpoint_period=0", "train.checkpoint_period=0 must be >= 1"),
    (TRAIN + "--gin.train.log_period=0", "train.log_period=0 must be >= 1"),
    (TRAIN + "--gin.train.keep_checkpoints=0", "train.keep_checkpoints=0 must be >= 1"),
    (TRAIN + "--gin.train.eval_period=-1", "train.eval_period=-1 must be >= 0"),
    (TRAIN + "--gin.train.num_microbatches=3", "num_microbatches=3 must be >= 1 and divide batch_size=8"),
    (TRAIN + "--gin.train.learning_rate=-1", "train.learning_rate=-1 must be >= 0"),
    (TRAIN + "--gin.train.label_smoothing=1.5", "train.label_smoothing=1.5 must be in [0, 1)"),
    (TRAIN + "--gin.train.z_loss=abc", "train.z_loss='abc' must be a finite number"),
    (TRAIN + "--gin.train.pack=1", "train.pack=1 must be True or False"),
    (TRAIN + "--gin.rsqrt_schedule.warmup_steps=0", "warmup_steps=0 must be >= 1"),
    (TRAIN + "--gin.optimizer.name=adam", "optimizer 'adam' is unknown"),
    (TRAIN + "--gin.train.restore_mode=oldest", "restore_mode='oldest' is unknown"),
    (TRAIN + "--gin.train.finetune_method=bogus", "finetune_method='bogus' is unknown"),
    (TRAIN + "--gin.T5Config.num_heads=0", "num_heads=0 must be a positive integer"),
    (TRAIN + "--gin.T5Config.d_model=abc", "T5Config.d_model='abc' must be an integer"),
    (TRAIN + "--gin.T5Config.architecture=bogus", "architecture='bogus' is unknown"),
    (TRAIN + "--gin.T5Config.dropout_rate=1.0", "dropout_rate=1.0 must be in [0, 1)"),
    # train: data, vocabulary, mesh and paths
    (TRAIN + "--gin.MIXTURE_OR_TASK_NAME=no_such_task", "unknown task or mixture 'no_such_task'"),
    (TRAIN + f"--gin.MIXTURE_OR_TASK_NAME={EMPTY}", "has no examples"),
    (TRAIN + "--gin.T5Config.vocab_size=128", "vocabulary has 259 ids but the model's vocab_size is 128"),
    (TRAIN + "--gin.train.mesh_shape=data:x", "mesh_shape entry 'data:x' is not NAME:SIZE"),
    (TRAIN + "--gin.train.mesh_shape=data:3", "has 3 devices but"),
    (TRAIN + "--gin.train.layout_rules=heads:nope", "names mesh axis 'nope'"),
    (TRAIN + "--gin.train.layout_rules=garbage", "layout_rules entry 'garbage' is not LOGICAL:MESH_AXIS"),
    (TRAIN + "--gin.MODEL_DIR={r}/afile", "MODEL_DIR {r}/afile is a file, not a directory"),
    (TRAIN + "--gin.MODEL_DIR={r}/afile/run", "{r}/afile is a file, not a directory"),
    (TRAIN + "--gin.train.init_checkpoint={r}/nope", "INIT_CHECKPOINT {r}/nope does not exist"),
    (TRAIN + "--gin.train.vocab_path={r}/adir", "train.vocab_path {r}/adir is a directory"),
    # eval
    (EVAL + "--gin.CHECKPOINT_PATH={r}/nope", "CHECKPOINT_PATH {r}/nope does not exist"),
    (
        EVAL + "--gin.CHECKPOINT_PATH={r}/model,{r}/nope",
        "CHECKPOINT_PATH {r}/nope does not exist",
    ),  # ensemble
    (EVAL + "--gin.CHECKPOINT_PATH={r}/model,{r}/adir", "has no config.json"),  # an ensemble member
    (
        EVAL + "--gin.CHECKPOINT_PATH={r}/model,{r}/model --gin.evaluate_checkpoints.steps='all'",
        "an ensemble uses each member's latest checkpoint",
    ),
    (EVAL + "--gin.CHECKPOINT_PATH={r}/afile", "CHECKPOINT_PATH {r}/afile is a file"),
    (EVAL + "--gin.CHECKPOINT_PATH={r}/adir", "has no config.json"),
    (EVAL + "--gin.BATCH_SIZE=0", "BATCH_SIZE=0 must be >= 1"),
    (EVAL + "--gin.TASK_FEATURE_LENGTHS=0", "TASK_FEATURE_LENGTHS=0 must be a dict"),
    (EVAL + "--gin.evaluate_checkpoints.beam_size=0", "beam_size=0 must be >= 1"),
    (EVAL + "--gin.evaluate_checkpoints.output_dir={r}/afile", "output_dir {r}/afile is a file"),
    (EVAL + "--gin.MIXTURE_OR_TASK_NAME=no_such_task", "unknown task or mixture 'no_such_task'"),
    (EVAL + "--gin.CHECKPOINT_PATH={r}/run", "has no checkpoints yet"),
    (EVAL, "vocabulary has 259 ids but the model's vocab_size is 128"),
    # infer
    ("infer --input_file={r}/in.txt", "no model given"),
    (INFER + "--task=" + COPY, "give exactly one of --input_file=PATH and --task=NAME"),
    (
        INFER + "--split=train",
        "--split=train selects a split of --task=NAME; drop it, an --input_file has no splits",
    ),
    (INFER + "--mode=bogus", "--mode='bogus' is unknown"),
    (INFER + "--checkpoint={r}/nope", "--checkpoint {r}/nope does not exist"),
    (INFER + "--checkpoint={r}/in.txt", "--checkpoint {r}/in.txt is a file, not a directory"),
    (INFER + "--checkpoint={r}/adir", "holds no config.json"),
    (INFER + "--input_file={r}/nope.txt", "--input_file {r}/nope.txt does not exist"),
    (INFER + "--input_file={r}/adir", "--input_file {r}/adir is a directory, not a file"),
    (INFER + "--input_file={r}/latin1.txt", "latin1.txt:1 is not UTF-8 (byte 0xe9)"),
    (INFER + "--input_file={r}/three.tsv", "has 3 tab-separated fields"),
    (INFER + "--input_file={r}/bad.jsonl", 'has no string "inputs"'),
    (INFER + "--input_file={r}/notjson.jsonl", "is not valid JSON"),
    (INFER + "--mode=score", "score mode needs targets; 2 of 2 examples have none"),
    (INFER + "--output_file={r}/exists.jsonl", "exists; pass --overwrite"),
    (INFER + "--output_file={r}/adir", "--output_file {r}/adir is a directory"),
    (INFER + "--output_file={r}/afile/out.jsonl", "{r}/afile is a file, not a directory"),
    (INFER + "--beam_size=0", "beam_size=0 must be >= 1"),
    (INFER + "--beam_size=abc", "argument --beam_size: invalid int value: 'abc'"),
    (INFER + "--max_decode_length=-1", "max_decode_length=-1 must be >= 1"),
    (INFER + "--top_p=1.5", "top_p=1.5 must be in (0, 1]"),
    (INFER + "--top_p=0", "top_p=0.0 must be in (0, 1]"),
    (INFER + "--temperature=-1", "temperature=-1.0 must be >= 0"),
    (INFER + "--top_k=-1", "top_k=-1 must be >= 0"),
    (INFER + "--alpha=-1", "alpha=-1.0 must be >= 0"),
    (INFER + "--alpha=nan", "alpha=nan must be a finite number"),
    (INFER + "--beam_size=2 --temperature=0.5", "set one of them aside"),
    (INFER + "--batch_size=0", "--batch_size=0 must be >= 1"),
    (INFER + "--max_input_length=0", "--max_input_length=0 must be >= 1"),
    (INFER + "--limit=-1", "--limit=-1 must be >= 1"),
    (INFER + "--limit=0", "--limit=0 must be >= 1"),
    (INFER + "--input_file={r}/empty.txt", "holds no examples"),
    (INFER + "--gin.infer.beam_size=abc", "beam_size='abc' must be an integer"),
    (INFER + "--gin.infer.overwrite=3", "--overwrite=3 must be True or False"),
    (INFER + "--gin.infer.mode=1", "--mode=1 is unknown; use predict or score"),
    (INFER + "--bogus_flag=1", "unrecognized arguments: --bogus_flag=1"),
    (INFER + "--vocab={r}/nope.model", "--vocab {r}/nope.model does not exist"),
    (INFER + "--vocab={r}/adir", "--vocab {r}/adir is a directory"),
    (INFER + "--vocab={r}/garbage.model", "is not a SentencePiece model"),
    (INFER + "--mesh_shape=data:x", "mesh_shape entry 'data:x'"),
    (INFER + "--mesh_shape=data:3", "has 3 devices but"),
    (INFER + "--layout_rules=foo:data", "unknown logical axis 'foo'"),
    ("infer --checkpoint={r}/model --task=no_such_task", "unknown task or mixture 'no_such_task'"),
    (f"infer --checkpoint={{r}}/model --task={MIXTURE}", "is a mixture; pass one of its tasks"),
    (INFER, "has 359 ids but the model's vocab_size is 128"),
    # export
    ("export --output_dir={r}/saved", "no model given"),
    ("export --checkpoint={r}/model", "no output directory given"),
    (EXPORT + "--platforms=garbage", "platform='garbage' is unknown; use one of cpu, cuda, rocm, tpu"),
    (EXPORT + "--platforms=,", "platform='' is unknown"),
    (EXPORT + "--output_dir={r}/afile", "{r}/afile is a file, not a directory"),
    (EXPORT + "--output_dir={r}/nonempty", "exists and is not empty"),
    (EXPORT + "--output_dir={r}/afile/saved", "cannot create output dir"),
    (EXPORT + "--checkpoint={r}/nope", "--checkpoint {r}/nope does not exist"),
    (EXPORT + "--beam_size=0", "beam_size=0 must be >= 1"),
    (EXPORT + "--max_decode_length=0", "max_decode_length=0 must be >= 1"),
    (EXPORT + "--max_input_length=1", "max_input_length=1 must be >= 2"),
    (EXPORT + "--alpha=-1", "alpha=-1.0 must be >= 0"),
    (EXPORT + "--beam_size=x", "argument --beam_size: invalid int value: 'x'"),
    (EXPORT + "--vocab={r}/nope.model", "--vocab {r}/nope.model does not exist"),
    (EXPORT, "has 359 ids but the model's vocab_size is 128"),
    # convert
    (CONVERT + "--to=garbage", "argument --to: invalid choice: 'garbage'"),
    ("convert --input={r}/model --to=hf", "the following arguments are required: --output_dir"),
    (CONVERT + "--input={r}/nope", "--input {r}/nope does not exist"),
    (CONVERT + "--input={r}/in.txt", "--input {r}/in.txt is a file, not a directory"),
    (CONVERT + "--input={r}/adir", "holds no config.json"),
    (CONVERT + "--output_dir={r}/nonempty", "exists and is not empty"),
    (CONVERT + "--output_dir={r}/afile", "{r}/afile is a file, not a directory"),
    (CONVERT + "--output_dir={r}/afile/out", "cannot create --output_dir"),
    (CONVERT + "--vocab={r}/adir", "--vocab {r}/adir is a directory"),
    (CONVERT + "--vocab={r}/byte", "has 359 ids but the model's vocab_size is 128"),
    (CONVERT + "--from=hf", "is a mesh_t5 dir, not hf; pass --from=mesh_t5"),
    (CONVERT + "--gin.T5Config.d_model=8", "apply to Mesh-TF checkpoints only"),
    (CONVERT + "--operative_gin={r}/nope.gin", "--operative_gin {r}/nope.gin does not exist"),
    # plan
    ("plan --model=t5-small", "the following arguments are required: --mesh_shape"),
    (PLAN + "--mesh_shape=data:x", "mesh_shape entry 'data:x'"),
    (PLAN + "--mesh_shape=data:2,model:3", "mesh model:3 does not divide"),
    (PLAN + "--mesh_shape=data:2,data:2", "names axis 'data' twice"),
    (PLAN + "--model=t5-huge", "unknown model size 't5-huge'"),
    (PLAN + "--device_memory=lots", "device_memory='lots' is not a size"),
    (PLAN + "--batch_size=0", "--batch_size=0 must be >= 1"),
    (PLAN + "--batch_size=3", "does not divide batch_size=3"),
    (PLAN + "--layout_rules=heads:nope", "names mesh axis 'nope'"),
    (PLAN + "--gin.T5Config.d_model=abc", "T5Config.d_model='abc' must be an integer"),
    (PLAN + "--gin.T5Config.bogus=1", "unknown T5Config field(s) bogus"),
    (
        PLAN + "--gin.T5Config.remat=\"'some'\"",
        "remat='some' is unknown; pick one of none, full, minimal, dots",
    ),
    ("plan --mesh_shape=data:2", "no model given"),
    # tasks
    ("tasks --module=no_such_module_xyz", "cannot be imported"),
    ("tasks --module=badtasks", "raised RuntimeError: boom in my task module"),
    ("tasks '('", "is not a regular expression"),
    # demo
    ("demo --quick --output_dir={r}/afile", "--output_dir {r}/afile is a file"),
    ("demo --quick --output_dir={r}/nonempty", "is not empty and is not a demo run"),
    ("demo --quick --output_dir={r}/demo --stdlib_dir={r}/nope", "--stdlib_dir {r}/nope does not exist"),
    ("demo --quick --output_dir={r}/demo --stdlib_dir={r}/afile", "--stdlib_dir {r}/afile is a file"),
    ("demo --quick --output_dir={r}/demo --stdlib_dir={r}/adir", "holds no .py files"),
    ("demo --quick --bogus", "unrecognized arguments: --bogus"),
]


def _case_id(argv: str) -> str:
    for prefix, name in ((TRAIN, "train"), (EVAL, "eval"), (INFER, "infer"), (EXPORT, "export"),
                         (CONVERT, "convert"), (PLAN, "plan")):  # fmt: skip
        if argv.startswith(prefix):
            return f"{name} {argv[len(prefix) :]}".strip()[:80]
    return argv[:80]


@pytest.mark.parametrize(("argv", "needle"), CLI_CASES, ids=[_case_id(c[0]) for c in CLI_CASES])
def test_cli_mistake_is_one_line_and_writes_nothing(root, capsys, monkeypatch, argv, needle):
    monkeypatch.chdir(root)  # relative defaults (demo's ./mesh_t5_demo) land where the snapshot looks
    monkeypatch.syspath_prepend(str(root))  # the user's task modules
    before = snapshot(root)
    code = cli.main(shlex.split(argv.format(r=root)))
    err = capsys.readouterr().err
    assert code == 2, err
    line = check_line(err, needle.format(r=root))
    assert line.startswith("mesh-t5")
    assert snapshot(root) == before


@pytest.mark.parametrize(
    "argv",
    [
        TRAIN + "--gin.MODEL_DIR={r}/readonly",
        TRAIN + "--gin.MODEL_DIR={r}/readonly/run",
        EXPORT + "--output_dir={r}/readonly/saved",
        CONVERT + "--output_dir={r}/readonly/converted",
        INFER + "--output_file={r}/readonly/out.jsonl",
        "demo --quick --output_dir={r}/readonly",
        EVAL + "--gin.evaluate_checkpoints.output_dir={r}/readonly/eval",
    ],
    ids=["train MODEL_DIR", "train MODEL_DIR inside", "export", "convert", "infer", "demo", "eval"],
)
def test_read_only_output_is_one_line(root, capsys, monkeypatch, argv):
    # The suite may run as root, for whom permission bits do not stop writes: report `readonly`
    # as the kernel would for an ordinary user (or a read-only mount).
    real_access = os.access
    readonly = str(root / "readonly")
    monkeypatch.setattr(
        os,
        "access",
        lambda p, mode: False if os.fspath(p) == readonly and mode & os.W_OK else real_access(p, mode),
    )
    before = snapshot(root)
    code = cli.main(shlex.split(argv.format(r=root)))
    assert code == 2
    check_line(capsys.readouterr().err, "is not writable")
    assert snapshot(root) == before


@pytest.mark.parametrize("name", [COPY, MIXTURE])
def test_peeking_at_the_train_split_rewinds_exactly(root, name):
    # train() takes one batch to refuse an empty split before writing MODEL_DIR, then rewinds: the
    # batches it then trains on must be those of an untouched pipeline.
    def pipeline():
        return data.get_dataset(
            name, {"inputs": 8, "targets": 8}, "train", batch_size=3, shuffle=True, seed=7
        )

    untouched, peeked = pipeline(), pipeline()
    train.check_yields_a_batch(peeked, name)
    for _ in range(6):  # past the 16 examples: the second epoch's shuffle too
        a, b = next(untouched), next(peeked)
        assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_gin_references_on_the_command_line_stay_references():
    _, bindings = gin_utils.split_gin_bindings(
        ["--gin.train.learning_rate=@constant_schedule()", "--gin.train.optimizer=@optimizer",
         "--gin.X=%MODEL_DIR", "--gin.TRAIN_STEPS=12abc", "--gin.MODEL_DIR=/tmp/@run", "--gin.N=1e-3"]
    )  # fmt: skip
    assert bindings == [
        "train.learning_rate = @constant_schedule()", "train.optimizer = @optimizer", "X = %MODEL_DIR",
        "TRAIN_STEPS = '12abc'", "MODEL_DIR = '/tmp/@run'", "N = 1e-3",
    ]  # fmt: skip


# --------------------------------------------------------------------------------------------- Python API


@pytest.fixture(scope="module")
def model(root) -> T5Model:
    return T5Model.from_pretrained(root / "model")  # vocab_size 128, byte vocabulary (359 ids) beside it


def _ids(*rows):
    return np.asarray(rows, np.int32)


# (id, call(model, root), exception type, a piece of the message).
API_CASES = [
    (
        "from_pretrained missing",
        lambda m, r: T5Model.from_pretrained(r / "nope"),
        UserError,
        "does not exist",
    ),
    ("from_pretrained file", lambda m, r: T5Model.from_pretrained(r / "afile"), UserError, "is a file"),
    (
        "from_pretrained not a model",
        lambda m, r: T5Model.from_pretrained(r / "adir"),
        UserError,
        "config.json",
    ),
    ("from_pretrained int", lambda m, r: T5Model.from_pretrained(3), TypeError, "must be a path"),
    (
        "from_pretrained bad mesh",
        lambda m, r: T5Model.from_pretrained(r / "model", mesh_shape="data:x"),
        UserError,
        "mesh_shape entry 'data:x'",
    ),
    (
        "from_pretrained mesh too big",
        lambda m, r: T5Model.from_pretrained(r / "model", mesh_shape="data:3"),
        UserError,
        "has 3 devices but",
    ),
    ("init not a config", lambda m, r: T5Model.init("t5-small"), TypeError, "config must be a T5Config"),
    ("init negative seed", lambda m, r: T5Model.init(m.config, seed=-1), UserError, "seed=-1 must be >= 0"),
    ("logits id >= vocab", lambda m, r: m.logits(_ids([5, 1]), _ids([0, 128])), UserError, "token id 128"),
    ("logits negative id", lambda m, r: m.logits(_ids([-3, 1]), _ids([0, 5])), UserError, "token id -3"),
    ("logits 1-D", lambda m, r: m.logits(np.arange(3), _ids([0, 5])), TypeError, "must be a 2-D integer"),
    ("logits floats", lambda m, r: m.logits(_ids([5, 1]) * 1.5, _ids([0, 5])), TypeError, "2-D integer"),
    ("logits ragged", lambda m, r: m.logits([[5, 1], [5]], _ids([0, 5])), UserError, "different lengths"),
    ("logits rows", lambda m, r: m.logits(_ids([5, 1]), _ids([0, 5], [0, 6])), UserError, "1 rows but"),
    ("logits no encoder", lambda m, r: m.logits(None, _ids([0, 5])), UserError, "needs encoder_input_tokens"),
    ("generate str", lambda m, r: m.generate("a string"), TypeError, "not a single str; wrap it: [text]"),
    ("generate ints", lambda m, r: m.generate([1, 2]), TypeError, "texts[0] is a int; pass strings"),
    ("generate vocab", lambda m, r: m.generate(["hello"]), UserError, "has 359 ids but the model's vocab"),
    ("generate_tokens id", lambda m, r: m.generate_tokens(_ids([500, 1])), UserError, "token id 500"),
    ("generate_tokens 1-D", lambda m, r: m.generate_tokens([5, 1]), TypeError, "2-D integer array"),
    ("beam_size 0", lambda m, r: m.generate_tokens(_ids([5, 1]), beam_size=0), UserError, "beam_size=0"),
    ("beam_size 1.5", lambda m, r: m.generate_tokens(_ids([5, 1]), beam_size=1.5), UserError, "an integer"),
    (
        "max_decode_length -1",
        lambda m, r: m.generate_tokens(_ids([5, 1]), max_decode_length=-1),
        UserError,
        "max_decode_length=-1 must be >= 1",
    ),
    ("top_p 1.5", lambda m, r: m.generate_tokens(_ids([5, 1]), top_p=1.5), UserError, "top_p=1.5 must be in"),
    (
        "temperature -1",
        lambda m, r: m.generate_tokens(_ids([5, 1]), temperature=-1),
        UserError,
        "temperature",
    ),
    ("top_k -1", lambda m, r: m.generate_tokens(_ids([5, 1]), top_k=-1), UserError, "top_k=-1 must be >= 0"),
    ("alpha inf", lambda m, r: m.generate_tokens(_ids([5, 1]), alpha=float("inf")), UserError, "alpha=inf"),
    ("score str", lambda m, r: m.score("a", ["b"]), TypeError, "inputs must be a list of strings"),
    ("score lengths", lambda m, r: m.score(["a", "b"], ["c"]), UserError, "2 inputs but 1 targets"),
    ("save format", lambda m, r: m.save_pretrained(r / "out", format="onnx"), UserError, "format='onnx'"),
    ("save onto file", lambda m, r: m.save_pretrained(r / "afile"), UserError, "is a file, not a directory"),
    ("save non-empty", lambda m, r: m.save_pretrained(r / "nonempty"), UserError, "is not empty"),
    ("export non-empty", lambda m, r: m.export_saved_model(r / "nonempty"), UserError, "is not empty"),
    ("export beam 0", lambda m, r: m.export_saved_model(r / "sm", beam_size=0), UserError, "beam_size=0"),
    (
        "export platforms",
        lambda m, r: m.export_saved_model(r / "sm", platforms=["garbage"]),
        UserError,
        "platform='garbage' is unknown",
    ),
    ("export vocab", lambda m, r: m.export_saved_model(r / "sm"), UserError, "has 359 ids but the model"),
    ("get_task int", lambda m, r: data.get_task(123), TypeError, "must be a string, not int"),
    ("get_task unknown", lambda m, r: data.get_task("glue_cola_v003"), UserError, "unknown task"),
    ("get_mixture unknown", lambda m, r: data.get_mixture("no_such_mixture"), UserError, "no_such_mixture"),
    ("random_spans 0", lambda m, r: data.random_spans_helper(0), UserError, "inputs_length=0 must be >= 2"),
    ("random_spans density", lambda m, r: data.random_spans_helper(512, 0.0), UserError, "noise_density=0.0"),
    (
        "random_spans span",
        lambda m, r: data.random_spans_helper(512, 0.15, 0),
        UserError,
        "mean_noise_span_length=0 must be >= 1",
    ),
    ("random_spans str", lambda m, r: data.random_spans_helper("512"), UserError, "inputs_length='512'"),
]


@pytest.mark.parametrize(
    ("call", "kind", "needle"), [c[1:] for c in API_CASES], ids=[c[0] for c in API_CASES]
)
def test_api_mistake_raises_one_line_user_error(root, model, call, kind, needle):
    before = snapshot(root)
    with pytest.raises(UserError) as info:  # the API's own type (a ValueError; TypeError too where apt)
        call(model, root)
    assert isinstance(info.value, kind)
    check_line(str(info.value), needle)
    assert snapshot(root) == before


# --------------------------------------------------------------------------------------------- real processes
# (commands that fail before importing JAX: a process that imports it pays seconds of start-up)


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        ("trian", "unknown command"),
        ("convert --input=x --output_dir=y --to=garbage", "invalid choice: 'garbage'"),
        ("tasks --module=badtasks", "boom in my task module"),
        (CONVERT + "--output_dir={r}/afile/out", "{r}/afile is a file, not a directory"),
    ],
    ids=["unknown command", "convert --to", "task module raises", "convert into a file"],
)
def test_console_sees_one_line_and_exit_2(root, argv, needle):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), *sys.path])}
    before = snapshot(root)
    result = subprocess.run(
        [sys.executable, "-m", "mesh_t5.cli", *shlex.split(argv.format(r=root))],
        capture_output=True, text=True, env=env, cwd=root, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    check_line(result.stderr, needle.format(r=root))
    assert snapshot(root) == before


def test_mesh_that_does_not_divide_the_model_is_one_line_everywhere(tmp_path):
    # On 3 fake devices (a fresh process): data:1,model:3 fits the devices but splits none of the
    # tiny model's heads, d_ff or vocabulary evenly. Every command that takes a mesh checks it against
    # the model first (eval once raised jax's IndivisibleError with a traceback).
    proc = run_script("mesh_mistakes.py", str(tmp_path), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    assert results.pop("unchanged") is True  # the script compares its directory before and after
    assert set(results) == {"train", "eval", "infer", "T5Model.init"}
    for case, (code, err) in results.items():
        assert code == (2 if case != "T5Model.init" else "UserError"), (case, err)
        line = check_line(err, "mesh model:3 does not divide")
        assert "pick a model axis that divides" in line, (case, line)
    assert {p.name for p in tmp_path.iterdir()} == {"byte", "model", "in.txt"}
