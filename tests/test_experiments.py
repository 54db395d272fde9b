"""The paper's study as named experiments: every row's configuration builds, the paper's scores are
where the files say, `mesh-t5 experiments` / `mesh-t5 train --experiment` work, and a sample of rows
trains a step on a tiny override."""

import os
import re

import gin
import jax
import numpy as np
import pytest
from mock_tfds import mock_tfds, train_tiny_vocab

from mesh_t5 import checkpoints, cli, data, experiments, finetuning, gin_utils, layouts, optim, steps
from mesh_t5.commands import train as train_command
from mesh_t5.config import T5Config
from mesh_t5.data import preprocessors as pp
from mesh_t5.data.objectives import random_spans_helper
from mesh_t5.errors import UserError
from mesh_t5.tasks import common
from mesh_t5.tasks import experiments as study_tasks
from mesh_t5.tasks.common import CatalogueTask, task_with_examples
from mesh_t5.tasks.mixtures import SUPERVISED_TASKS
from mesh_t5.vocab import ByteVocabulary, SentencePieceVocabulary

ROWS = experiments.paper_scores()["experiments"]
VOCAB = ByteVocabulary(extra_ids=100)  # 359 ids: fits models/tiny.gin's 512
TINY_TASK = "test_experiments_copy"


def bound(name, default=None):
    """Returns the value gin passes for `name` ("train.batch_size"), macros and @T5Config() evaluated."""
    try:
        value = gin.query_parameter(name)
    except ValueError:
        return default
    while isinstance(value, gin.config.ConfigurableReference):
        value = value.scoped_configurable_fn()
    return value


def configure(files, bindings=()):
    """Parses an experiment stage like `mesh-t5 train` does; returns the values `train` would get."""
    gin_utils.register(train_command.CONFIGURABLES)
    gin_utils.parse_gin(files, ["MODEL_DIR = '/nonexistent'", *bindings], finalize=True)
    names = ("mixture_or_task_name", "task_feature_lengths", "batch_size", "model_config", "train_steps")
    return {n: bound(f"train.{n}") for n in names}


def test_paper_numbers_are_the_papers():
    """Spot checks against the paper's text (Tables 1, 7, 10, 14): numbers a transcription could get wrong."""
    head = experiments.paper_scores()["headline"]
    assert head["baseline"]["mean"] == {
        "GLUE": 83.28, "CNNDM": 19.24, "SQuAD": 80.88, "SGLUE": 71.36, "EnDe": 26.98, "EnFr": 39.82, "EnRo": 27.65,
    }  # fmt: skip
    assert head["baseline"]["std"]["SGLUE"] == 0.416 and head["baseline"]["no_pretraining"]["SQuAD"] == 50.31
    t5_11b = head["t5_final"]["models"]["T5-11B"]
    assert (t5_11b["GLUE"], t5_11b["SQuAD"], t5_11b["SQuAD_F1"], t5_11b["SGLUE"], t5_11b["CNNDM"]) == (
        90.3, 91.26, 96.22, 88.9, 21.55,
    )  # fmt: skip
    assert ROWS["table7_span_length_10"]["scores"]["GLUE"] == 82.85
    assert ROWS["table10_adapters_d32"]["scores"]["EnDe"] == 13.84
    assert ROWS["table9_data_2^23_tokens"]["scores"]["SGLUE"] == 59.29
    assert experiments.compare({"GLUE": 84.0, "EnRo": 27.0}) == [
        ("GLUE", 84.0, 83.28, pytest.approx(0.72)), ("EnRo", 27.0, 27.65, pytest.approx(-0.65)),
    ]  # fmt: skip


def test_every_row_has_a_file_whose_header_quotes_its_scores():
    """One gin file per row of Tables 1-14 (Table 3 only illustrates objectives: its rows are rows of
    Tables 4, 5 and 7), each header citing the row and the paper's scores exactly as the JSON has them."""
    files = {p[:-4] for p in os.listdir(experiments.EXPERIMENTS_DIR) if p.endswith(".gin")}
    assert files - set(ROWS) == {"finetune"} and set(ROWS) <= files
    assert {r["table"] for r in ROWS.values()} == {1, 2, *range(4, 15)}
    assert len([n for n, r in ROWS.items() if r["table"] == 2]) == 10 and len(ROWS) >= 79
    for name, row in ROWS.items():
        text = (experiments.EXPERIMENTS_DIR / f"{name}.gin").read_text()
        assert text.startswith(f'# {name}: Table {row["table"]}, row "{row["row"]}"'), name
        quoted = re.search(r"^# Paper \([^\n]*?\): (.*)$", text, re.M).group(1)
        pairs = dict(re.findall(r"(\w+) ([\d.]+)", quoted))
        assert {k: float(v) for k, v in pairs.items()} == row["scores"], name


@pytest.mark.parametrize("name", list(ROWS))
def test_every_stage_builds(name, tmp_path, monkeypatch):
    """Gin parses, the model config and a model-parallel layout resolve, the fine-tuning method fits the
    model, and the data (task or mixture, and every task of a mixture) exists with its sequence lengths."""
    monkeypatch.setenv(study_tasks.TBC_ENV, str(tmp_path / "*.txt"))
    for stage in experiments.stages(name):
        files, required = experiments.stage_files(name, stage)
        macros = configure(files, [f"{m} = 'glue_v002_proportional'" for m in required])
        config = macros["model_config"]
        assert isinstance(config, T5Config) and macros["train_steps"] >= 1
        mesh = bound("train.mesh_shape") or "data:2,model:4"  # the files leave the mesh to the user
        layouts.validate(layouts.make_abstract_layout(mesh), config, macros["batch_size"])
        finetuning.check_method(bound("train.finetune_method", "all"), config, bound("train.unfreeze_every"))
        converter = data.FeatureConverter(bound("train.feature_converter") or "enc_dec")
        assert converter.model_lengths(macros["task_feature_lengths"])
        item = data.get_mixture_or_task(macros["mixture_or_task_name"])
        tasks = item.tasks if isinstance(item, data.Mixture) else [item]
        assert all(t.splits for t in tasks)
        # The TFDS streams are checked on tensorflow_datasets.testing.mock_data below, for the rows'
        # pre-training data sets (test_tfds_rows_stream_on_mock_data).


TFDS_ROWS = [
    "baseline", "table8_c4_unfiltered", "table8_realnewslike", "table8_webtextlike", "table8_wikipedia",
    "table9_data_2^23_tokens",
]  # fmt: skip


def test_tfds_rows_stream_on_mock_data():
    """Each pre-training data set of Tables 8-9 streams a packed batch from TFDS mock examples (the real
    datasets' feature specs) through the row's preprocessors, with a byte vocabulary."""
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=2):
        for name in TFDS_ROWS:
            macros = configure(experiments.stage_files(name)[0])
            original = data.get_task(macros["mixture_or_task_name"])
            features = {
                k: data.Feature(VOCAB, f.add_eos, f.required) for k, f in original.output_features.items()
            }
            task = CatalogueTask(f"mock_{name}", original.source, original.preprocessors, features)
            batch = next(data.get_dataset(task, macros["task_feature_lengths"], batch_size=2, num_epochs=1))
            assert batch["encoder_input_tokens"].shape == (2, 512) and batch["decoder_target_tokens"].any(), (
                name
            )


def test_every_stage_streams_a_batch_on_mock_data(tmp_path, monkeypatch):
    """Every row's every stage: its task or mixture (over every member task) streams an example through the
    stage's objective and feature converter, on TFDS mock data (each real dataset's feature spec) with the
    catalogue's default vocabulary set to a tiny SentencePiece model. Lengths are capped at 64 and nothing
    is packed: mock texts are a few words, so the stages' 512-token chunks would cost ~5 s each (50 runs);
    the stages' own lengths are checked against their converters in test_every_stage_builds."""
    (tmp_path / "tbc.txt").write_text("A book line with words.\nAnother line of the book.\n" * 50)
    monkeypatch.setenv(study_tasks.TBC_ENV, str(tmp_path / "*.txt"))
    vocab = SentencePieceVocabulary(train_tiny_vocab(tmp_path / "spm.model"))
    monkeypatch.setattr(common.DEFAULT_VOCABULARY, "_vocab", vocab)
    runs = {}  # (task or mixture, lengths, converter) -> the rows that train on it
    for name in ROWS:
        for stage in experiments.stages(name):
            files, required = experiments.stage_files(name, stage)
            macros = configure(files, [f"{m} = 'glue_v002_proportional'" for m in required])
            converter = bound("train.feature_converter") or "enc_dec"
            key = (
                macros["mixture_or_task_name"],
                tuple(sorted(macros["task_feature_lengths"].items())),
                converter,
            )
            runs.setdefault(key, []).append(name)
    assert len(runs) >= 20  # objectives, corruption rates, span lengths, data sets, sizes, mixtures
    with mock_tfds(num_examples=4):
        for (task, lengths, converter), rows in runs.items():
            capped = {k: min(v, 64) for k, v in lengths}
            batch = next(
                data.get_dataset(
                    task, capped, batch_size=1, pack=False, feature_converter=converter, num_epochs=None
                )
            )
            row = batch["decoder_target_tokens"][0]
            kept = row[row != 0]  # a real example: EOS-ended, or cut at the row's end
            assert len(kept) > 0 and (kept[-1] == 1 or len(kept) == len(row)), (task, rows)


def test_lengths_of_the_span_rows_fit_their_objective_exactly():
    """Each span row's TASK_FEATURE_LENGTHS is what its objective makes (no truncation, inputs full)."""
    text = " ".join(f"word{i % 97}" for i in range(3000))  # ~20k byte tokens: several 512-token chunks
    for name in ("baseline", "table6_corruption_rate_50", "table7_span_length_2", "table7_span_length_10"):
        macros = configure(experiments.stage_files(name)[0])
        lengths = macros["task_feature_lengths"]
        task = task_with_examples(macros["mixture_or_task_name"], {"train": [{"text": text}] * 2}, VOCAB)
        examples = list(task.get_dataset("train", sequence_length=lengths))
        assert len(examples) >= 20 and not any(k.startswith("truncated") for k in task.stats), (
            name,
            task.stats,
        )
        longest = max(len(ex["targets"]) for ex in examples)
        assert longest <= lengths["targets"] and max(len(ex["inputs"]) for ex in examples) <= 512
        if "span_length" in name:  # span corruption hits its lengths exactly
            span = float(name.rsplit("_", 1)[1])
            assert {len(ex["inputs"]) for ex in examples[:-1]} == {512}
            assert lengths["targets"] == random_spans_helper(512, 0.15, span)[1]


def test_toronto_books_is_read_from_the_env_files(tmp_path, monkeypatch):
    (tmp_path / "book1.txt").write_text("Once upon a time there was a book.\nIt had two lines.\n")
    (tmp_path / "book2.txt").write_text("A second book.\nWith three\nlines.\n")
    monkeypatch.setenv(study_tasks.TBC_ENV, str(tmp_path / "*.txt"))
    task = data.get_task("toronto_books_iid_denoising")
    source = task.source
    raw = [r["text"] for r in source.iter_split("train")]
    assert raw == [
        "Once upon a time there was a book.",
        "It had two lines.",
        "A second book.",
        "With three",
        "lines.",
    ]
    # Sized like any file source (a resumed run seeks through FileSource.read), so two hosts read
    # contiguous halves rather than every other line.
    assert source.num_examples("train") == 5
    assert [r["text"] for r in source.iter_split("train", start=2)] == raw[2:]
    assert [[r["text"] for r in source.iter_split("train", 0, h, 2)] for h in (0, 1)] == [raw[:2], raw[2:]]
    monkeypatch.setenv(study_tasks.TBC_ENV, str(tmp_path / "book2.txt"))  # the variable is read at each use
    assert source.num_examples("train") == 3
    monkeypatch.delenv(study_tasks.TBC_ENV)
    with pytest.raises(UserError, match="MESH_T5_TBC_FILES=/path/to"):
        list(task.source.iter_split("train"))


def test_mixture_rates_follow_the_papers_formulas():
    """r_m = min(e_m, K) / sum, temperature r^(1/T), leave-one-out without a benchmark's tasks."""
    k16 = data.get_mixture("paper_mt_proportional_k2^16")
    rates = {
        t: k16.get_rate(data.get_task(t))
        for t in ("glue_mnli_v002", "glue_cola_v002", "c4_v220_iid_denoising")
    }
    assert rates == {"glue_mnli_v002": 2.0**16, "glue_cola_v002": 8551.0, "c4_v220_iid_denoising": 2.0**16}
    t2 = data.get_mixture("paper_mt_temperature_t2")
    assert t2.get_rate(data.get_task("glue_cola_v002")) == pytest.approx(8551.0**0.5)
    assert t2.get_rate(data.get_task("c4_v220_iid_denoising")) == pytest.approx(2.0**10.5)
    loo = {t.name for t in data.get_mixture("paper_mt_leave_one_out_glue").tasks}
    assert "glue_cola_v002" not in loo and {"super_glue_boolq_v102", "c4_v220_iid_denoising"} <= loo
    assert "c4_v220_iid_denoising" not in {t.name for t in data.get_mixture("paper_mt_supervised").tasks}
    assert data.get_task("c4_v220_iid_denoising_2^25_tokens").source.max_tokens == 2**25
    # The fine-tuning task of each column is the one whose tasks the leave-one-out mixture drops.
    assert sorted(study_tasks.STUDY_TASKS) == sorted(SUPERVISED_TASKS)  # the catalogue's all_* mixtures'
    columns = experiments.paper_scores()["finetune_tasks"]
    assert {b: t for b, (t, _) in study_tasks.BENCHMARK_TASKS.items()} == columns


def test_listing_and_one_line_refusals(tmp_path, capsys):
    assert cli.main(["experiments", "span_length"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"table7_span_length_10 +7 +82\.85 +19\.33 +81\.84 +70\.44", out)
    assert "5 experiments" in out
    code = cli.main(["train", "--experiment=table7_span_lenght_10", f"--gin.MODEL_DIR={tmp_path}/x"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.splitlines() == [
        "mesh-t5 train: error: unknown experiment 'table7_span_lenght_10'; "
        "did you mean table7_span_length_10, table7_span_length_5, table7_span_length_3?"
    ]  # fmt: skip
    code = cli.main(
        ["train", "--experiment=table7_span_length_10", "--stage=finetune", f"--gin.MODEL_DIR={tmp_path}/x"]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "--gin.FINETUNE_TASK=VALUE" in err, err
    assert experiments.stage_files("table7_span_length_10") == (["experiments/table7_span_length_10.gin"], [])
    assert experiments.stage_files("table1_no_pretraining")[1] == ["FINETUNE_TASK"]
    assert experiments.stage_files("table10_adapters_d32", "finetune")[1] == ["FINETUNE_TASK", "PRETRAIN_DIR"]
    code = cli.main(["train", "--experiment=table11_equal", "--stage=finetune"])
    assert code == 2 and "has stages train, not 'finetune'" in capsys.readouterr().err
    assert not os.listdir(tmp_path)


# ----------------------------------------------------------------------------- one step on a tiny override


@pytest.fixture(scope="module", autouse=True)
def tiny_copy_task():
    def examples(split):
        rng = np.random.default_rng({"train": 0, "validation": 1}[split])
        for _ in range(64):
            text = "".join(rng.choice(list("abcd"), size=6))
            yield {"inputs": text, "targets": text}

    data.TaskRegistry.add(
        TINY_TASK, data.FunctionSource(examples), [pp.tokenize, pp.append_eos_after_trim],
        {"inputs": data.Feature(VOCAB), "targets": data.Feature(VOCAB)}, overwrite=True,
    )  # fmt: skip
    yield
    data.TaskRegistry.remove(TINY_TASK)


def tiny_version(name):
    """Registers a copy of experiment `name`'s pre-training task that reads a few texts with a byte
    vocabulary (same preprocessors: the row's objective); returns its name."""
    original = data.get_task(configure(experiments.stage_files(name)[0])["mixture_or_task_name"])
    text = " ".join(f"tok{i % 13}" for i in range(400))
    copy = task_with_examples(original, {"train": [{"text": text}] * 4}, VOCAB)
    tiny = CatalogueTask(f"tiny_{name}", copy.source, copy.preprocessors, copy.output_features)
    data.TaskRegistry.add(tiny, overwrite=True)
    return tiny.name


def train(capsys, name, model_dir, *extra):
    """Runs `mesh-t5 train --experiment=name` with models/tiny.gin after the row and `extra` flags last."""
    code = cli.main([
        "train", f"--experiment={name}", "--gin_file=models/tiny.gin", f"--gin.MODEL_DIR={model_dir}",
        "--gin.train.progress=False", "--gin.train.tensorboard=False", *extra,
    ])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 0, err
    return err


def test_one_pretraining_step_on_a_tiny_override(tmp_path, capsys):
    """The decoder-only language model row (the denoising inputs and targets as one causal sequence) on a
    tiny model and data: one step, a finite loss, the row's architecture and converter in the saved config.
    (Span corruption's lengths are checked above without training; the baseline trains below.)"""
    name, lengths = "table2_language_model_denoising", "{'inputs': 32, 'targets': 16}"
    task = tiny_version(name)
    err = train(
        capsys, name, tmp_path, f"--gin.MIXTURE_OR_TASK_NAME={task}", f"--gin.TASK_FEATURE_LENGTHS={lengths}",
        "--gin.TRAIN_STEPS=1", "--gin.BATCH_SIZE=2",
    )  # fmt: skip
    assert re.search(r"step 1, loss \d+\.\d+", err), err
    operative = (tmp_path / "operative_config.gin").read_text()
    assert f"'{task}'" in operative and "d_model = 64" in operative
    assert "architecture = 'decoder_only'" in operative and "feature_converter = 'prefix_lm'" in operative


def test_adapter_row_pretrains_then_finetunes_on_a_tiny_override(tmp_path, capsys):
    """Two stages: the baseline pre-training (stage 1, no adapters), then the row's fine-tuning from it
    (stage 2): the adapters start fresh and train with the layer norms, everything else stays as loaded."""
    pre, fine = tmp_path / "pre", tmp_path / "fine"
    task = tiny_version("baseline")
    lengths = "--gin.TASK_FEATURE_LENGTHS={'inputs': 32, 'targets': 12}"
    train(
        capsys, "table10_adapters_d32", pre, "--stage=pretrain", f"--gin.MIXTURE_OR_TASK_NAME={task}", lengths,
        "--gin.TRAIN_STEPS=1", "--gin.BATCH_SIZE=2",
    )  # fmt: skip
    err = train(
        capsys, "table10_adapters_d32", fine, "--stage=finetune", f"--gin.PRETRAIN_DIR={pre}",
        f"--gin.FINETUNE_TASK={TINY_TASK}", "--gin.FINETUNE_TRAIN_STEPS=2", "--gin.FINETUNE_BATCH_SIZE=2",
        "--gin.FINETUNE_FEATURE_LENGTHS={'inputs': 8, 'targets': 8}", "--gin.train.eval_period=0",
    )  # fmt: skip
    assert "step 2, loss" in err, err
    config = checkpoints.read_config(fine)
    assert config.adapter_dim == 32 and checkpoints.read_config(pre).adapter_dim == 0
    abstract = steps.abstract_state(config, optim.make_optimizer())["params"]
    tuned, step, _ = checkpoints.load_params(fine, abstract)
    loaded, _, _ = checkpoints.load_params(pre, abstract, new_adapters=lambda: abstract)
    assert step == 2
    flat_tuned = {
        jax.tree_util.keystr(p, simple=True, separator="/"): np.asarray(v)
        for p, v in jax.tree_util.tree_flatten_with_path(tuned)[0]
    }
    flat_pre = {
        jax.tree_util.keystr(p, simple=True, separator="/"): v
        for p, v in jax.tree_util.tree_flatten_with_path(loaded)[0]
    }
    frozen = [n for n in flat_tuned if "adapter" not in n and not n.endswith("norm/scale")]
    assert len(frozen) > 10 and any("adapter" in n for n in flat_tuned)
    for name in frozen:
        np.testing.assert_array_equal(flat_tuned[name], np.asarray(flat_pre[name]), err_msg=name)
    assert any(not np.array_equal(flat_tuned[n], np.asarray(flat_pre[n])) for n in flat_tuned if "norm" in n)
