"""`mesh-t5 demo`: the whole T5 recipe on the Python standard library's docstrings, offline, on a CPU.

corpus (stdlib docstrings, C4-cleaned) -> SentencePiece vocabulary -> span-corruption
pre-training -> fine-tuning on a mixture of two derived tasks, from the pre-trained checkpoint
and from scratch -> evaluation against trivial baselines -> beam-search samples -> SavedModel
export -> loss-curve PNG and a markdown report. Each model step is an ordinary `mesh-t5`
command, printed before it runs (run in this process so that JAX starts once); every artefact
goes under --output_dir. Re-running into the same directory resumes an unfinished run and
refuses a finished one.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from mesh_t5 import demo_corpus, demo_report, validate
from mesh_t5.errors import UserError
from mesh_t5.tasks import demo as demo_tasks

STEPS = (
    "corpus",
    "vocab",
    "pretrain",
    "finetune_pretrained",
    "finetune_scratch",
    "finetune_few_pretrained",
    "finetune_few_scratch",
    "evaluate",
    "infer",
    "export",
    "report",
)
SETTINGS_FILE = "demo_settings.json"
RESULTS_FILE = "results.json"
REPORT_FILE = "report.md"


@dataclasses.dataclass(frozen=True)
class Settings:
    """The sizes of a demo run (the default fits ~15 minutes on 2 CPU cores; --quick ~2 minutes)."""

    quick: bool
    vocab_size: int  # SentencePiece pieces (plus 100 sentinels)
    model_gin: str  # gin file under mesh_t5/gin/runs/
    pretrain_steps: int
    finetune_steps: int
    few_shot_examples: int  # labelled training examples per task in the low-resource arm
    few_shot_steps: int  # its fine-tuning steps (from each start)
    batch_size: int
    inputs_length: int
    targets_length: int
    eval_examples: int  # test examples decoded per task, spread over the file (0: all)
    num_samples: int  # held-out examples shown with beam search
    beam_size: int

    @classmethod
    def for_run(cls, quick: bool) -> Settings:
        if quick:
            return cls(True, 1000, "demo_model_quick.gin", 60, 25, 32, 15, 16, 128, 32, 32, 3, 4)
        return cls(False, 2000, "demo_model.gin", 600, 300, 64, 150, 32, 128, 32, 0, 5, 4)


class Run:
    """The output directory of one demo run: settings, per-step markers, and paths."""

    def __init__(self, output_dir: str, settings: Settings):
        self.root = Path(output_dir).resolve()
        self.settings = settings
        self.data = self.root / "data"
        self.steps_dir = self.root / ".steps"

    def check_or_start(self) -> bool:
        """Returns True when resuming; refuses a finished run, another run's directory or a foreign one."""
        settings_path = self.root / SETTINGS_FILE
        if (self.root / REPORT_FILE).exists() and self.done("report") is not None:
            raise UserError(
                f"{self.root} already holds a finished demo run ({REPORT_FILE}); "
                "pass a new --output_dir or delete that directory to run again"
            )
        wanted = dataclasses.asdict(self.settings)
        if settings_path.exists():
            found = json.loads(settings_path.read_text())
            if found != wanted:
                which = "--quick" if found.get("quick") else "default"
                raise UserError(
                    f"{self.root} holds an unfinished demo run with other settings ({which}); "
                    "re-run with the same flags to resume, or pass a new --output_dir"
                )
            return True
        if self.root.exists() and any(self.root.iterdir()):
            raise UserError(
                f"--output_dir {self.root} is not empty and is not a demo run; pass a new or empty directory"
            )
        self.root.mkdir(parents=True, exist_ok=True)
        settings_path.write_text(json.dumps(wanted, indent=2) + "\n")
        return False

    def done(self, step: str) -> dict | None:
        marker = self.steps_dir / f"{step}.json"
        return json.loads(marker.read_text()) if marker.exists() else None

    def mark_done(self, step: str, info: dict) -> None:
        self.steps_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.steps_dir / f"{step}.json.tmp"
        tmp.write_text(json.dumps(info, indent=2) + "\n")
        tmp.replace(self.steps_dir / f"{step}.json")  # atomic: a killed step is redone, not half-skipped


def say(text: str) -> None:
    """Prints a progress line and flushes (the demo interleaves with training output)."""
    print(text, flush=True)


def run_step(run: Run, index: int, name: str, title: str, fn: Callable[[], dict]) -> dict:
    """Runs one step unless its marker exists; prints its number, title and duration; returns its info."""
    header = f"[{index}/{len(STEPS)}] {title}"
    previous = run.done(name)
    if previous is not None:
        say(f"{header}: done in an earlier run, skipped")
        return previous
    say(f"\n{header}")
    start = time.perf_counter()
    info = fn()
    info["seconds"] = round(time.perf_counter() - start, 1)
    run.mark_done(name, info)
    say(f"    ({info['seconds']:.0f}s)")
    return info


def _shown(run: Run, argv: Sequence[str]) -> str:
    """The shell command line equivalent to running `argv` here."""
    return f"{demo_tasks.DEMO_DIR_ENV}={shlex.quote(str(run.data))} mesh-t5 {shlex.join(argv)}"


def mesh_t5(run: Run, argv: Sequence[str]) -> None:
    """Prints and runs `mesh-t5 ARGV` in this process (the demo tasks are registered here already)."""
    import gin

    from mesh_t5 import cli

    say(f"    $ {_shown(run, argv)}")
    gin.clear_config()
    code = cli.main(list(argv))
    gin.clear_config()
    if code:
        raise UserError(
            f"`mesh-t5 {argv[0]}` failed (exit {code}, message above); "
            "fix it and re-run the same demo command to resume"
        )


# ------------------------------------------------------------------------------------------ steps


def step_corpus(run: Run, stdlib_dir: str | None) -> dict:
    import collections

    counters: collections.Counter = collections.Counter()
    say(f"    reading docstrings with ast from {stdlib_dir or demo_corpus.default_stdlib_dir()} (no imports)")
    docs = demo_corpus.collect_documents(stdlib_dir, counters=counters)
    run.data.mkdir(parents=True, exist_ok=True)
    demo_corpus.write_documents(docs, run.data / "corpus.jsonl")
    sizes = {
        split: demo_corpus.write_pretraining_text(docs, run.data / name, split)
        for split, name in demo_tasks.PRETRAIN_FILES.items()
    }
    counts = demo_corpus.write_task_files(docs, run.data)
    few_counts = {}
    for task in demo_corpus.TASK_FILES:
        train = demo_corpus.read_examples(str(run.data / demo_corpus.TASK_FILES[task]).format(split="train"))
        # A seeded random draw over the whole file (it is in module order, so families cluster).
        few = random.Random(f"few:{task}").sample(train, min(run.settings.few_shot_examples, len(train)))
        write_jsonl(run.data / demo_tasks.FEW_SHOT_FILE.format(task=task), few)
        few_counts[task] = len(few)
    say(
        f"    {counters['docstrings']} docstrings in {counters['files']} files -> {len(docs)} clean documents "
        f"({sum(len(d.text) for d in docs) / 1e6:.2f} MB); pre-training text {sizes['train'] / 1e6:.2f} MB"
    )
    for task, by_split in counts.items():
        say(f"    task {task}: " + ", ".join(f"{n} {split}" for split, n in by_split.items()))
    return {
        "counters": dict(counters),
        "documents": len(docs),
        "pretrain_bytes": sizes,
        "task_examples": counts,
        "few_shot_examples": few_counts,
    }


def step_vocab(run: Run) -> dict:
    from mesh_t5.vocab import SentencePieceVocabulary

    path = run.data / demo_tasks.VOCAB_FILE
    text = run.data / demo_tasks.PRETRAIN_FILES["train"]
    size = run.settings.vocab_size
    say(f"    $ python -c 'SentencePieceVocabulary.train({str(text)!r}, {size}, model_path={str(path)!r})'")
    vocab = SentencePieceVocabulary.train(text, size, model_path=path)
    sample = "Return the number of items in the queue."
    pieces = [vocab.decode([i]) for i in vocab.encode(sample)]
    say(f"    {vocab.vocab_size} ids ({size} pieces + 100 sentinels); {sample!r} -> {pieces}")
    return {"vocab_size": vocab.vocab_size, "path": str(path)}


def write_jsonl(path: Path, examples: Sequence[dict]) -> Path:
    with open(path, "w", encoding="utf-8") as f:
        for example in examples:
            f.write(json.dumps(example, ensure_ascii=False) + "\n")
    return path


def spread(examples: Sequence[dict], n: int) -> list[dict]:
    """Returns n examples evenly spaced over the list (all when n is 0 or too large).

    The task files are in module order, so the first n would all come from one or two families.
    """
    if not n or n >= len(examples):
        return list(examples)
    return [examples[i * len(examples) // n] for i in range(n)]


def test_examples(run: Run, task: str) -> list[dict[str, str]]:
    """Returns the test examples of "summarize" or "family" that evaluation decodes (eval_examples spread, or all)."""
    path = str(run.data / demo_corpus.TASK_FILES[task]).format(split="test")
    return spread(demo_corpus.read_examples(path), run.settings.eval_examples)


def baselines(run: Run) -> dict[str, dict[str, dict]]:
    """Returns the baselines on the evaluated test examples.

    summarize: the input's lead sentence ("baseline", what copying the lead does) and, for
    reference, its shortest sentence ("shortest", a hand-made rule); family: the majority class.
    """
    from mesh_t5.data import metrics

    test = test_examples(run, "summarize")
    targets = [e["targets"] for e in test]
    lead = metrics.rouge(targets, [demo_corpus.lead_sentence(e["inputs"]) for e in test])
    shortest = metrics.rouge(targets, [demo_corpus.shortest_sentence(e["inputs"]) for e in test])
    train = demo_corpus.read_examples(str(run.data / demo_corpus.TASK_FILES["family"]).format(split="train"))
    label = demo_corpus.majority_label([e["targets"] for e in train])
    test = test_examples(run, "family")
    majority = metrics.accuracy([e["targets"] for e in test], [label] * len(test))
    return {
        demo_tasks.SUMMARIZE: {"baseline": lead, "shortest": shortest},
        demo_tasks.FAMILY: {"baseline": {**majority, "label": label}},
    }


def read_loss_curve(model_dir: Path, tag: str = "loss") -> list[tuple[int, float]]:
    """Returns [(step, training loss)] from the TensorBoard events of a `mesh-t5 train` run ([] if none)."""
    from mesh_t5.logging_utils import read_scalars

    log_dir = model_dir / "train"
    if not log_dir.is_dir():
        return []
    return sorted(read_scalars(str(log_dir)).get(tag, []))


# "pretrain" and each fine-tuned model ("pretrained", "scratch", "few_pretrained", "few_scratch")
# -> its MODEL_DIR; the step that trains a fine-tuned model is named like its directory.
MODEL_DIRS = {
    "pretrain": "pretrain",
    **{m: f"finetune_{m}" for m in (*demo_report.MODELS, *demo_report.FEW_MODELS)},
}
ARTEFACTS = (
    ("cleaned corpus (JSONL)", "data/corpus.jsonl"),
    ("task files", "data/summarize_*.jsonl, data/family_*.jsonl, data/pretrain_*.txt"),
    ("SentencePiece model", f"data/{demo_tasks.VOCAB_FILE}"),
    ("pre-trained checkpoint", f"{MODEL_DIRS['pretrain']}/checkpoints/"),
    (
        "fine-tuned checkpoints",
        f"{MODEL_DIRS['pretrained']}/checkpoints/, {MODEL_DIRS['scratch']}/checkpoints/",
    ),
    ("TensorBoard logs", "*/train/"),
    ("SavedModel (strings in, strings out)", "saved_model/"),
    ("loss curves", "loss_curves.png"),
    ("machine-readable results", RESULTS_FILE),
)


def step_report(run: Run) -> dict:
    info = {name: run.done(name) or {} for name in STEPS if name != "report"}
    # {task: {"pretrained": {...}, "scratch": {...}, "baseline": {...}}}
    scores = info["evaluate"].get("scores", {})
    pretrain_curve = read_loss_curve(run.root / MODEL_DIRS["pretrain"])
    # The pre-trained run's steps continue from pre-training's; count both runs from the start of
    # fine-tuning so the two curves share an x-axis.
    offset = pretrain_curve[-1][0] if pretrain_curve else 0
    curves = {
        "pre-training (span corruption)": {"pre-training": pretrain_curve},
        **{
            f"fine-tuning on {data}, steps since it began": {
                "from the pre-trained checkpoint": [
                    (step - offset, loss) for step, loss in read_loss_curve(run.root / MODEL_DIRS[pre])
                ],
                "from scratch": read_loss_curve(run.root / MODEL_DIRS[scratch]),
            }
            for data, pre, scratch in (
                ("all examples", "pretrained", "scratch"),
                (f"{run.settings.few_shot_examples} examples per task", "few_pretrained", "few_scratch"),
            )
        },
    }
    png = demo_report.plot_loss_curves(
        curves, run.root / "loss_curves.png", title="mesh-t5 demo: training loss"
    )
    s = run.settings
    setup = (
        f"Model: `{s.model_gin}`; vocabulary {info['vocab'].get('vocab_size', '?')} ids; batch {s.batch_size}; "
        f"lengths inputs {s.inputs_length} / targets {s.targets_length}; pre-training {s.pretrain_steps} steps; "
        f"fine-tuning {s.finetune_steps} steps from each start on all training examples, and {s.few_shot_steps} "
        f"steps on {s.few_shot_examples} examples per task (a seeded random draw: "
        f"`data/{demo_tasks.FEW_SHOT_FILE.format(task='*')}`); test examples evaluated per task: "
        f"{s.eval_examples or 'all'}; beam size {s.beam_size} for samples."
    )
    commands = "\n".join(f"    {c}" for i in info.values() for c in i.get("commands", []))
    sections = [
        (
            "Does pre-training help? (pre-trained vs from scratch, same fine-tuning)",
            demo_report.transfer_section(info["evaluate"].get("comparisons", [])),
        ),
        ("Results", demo_report.results_section(scores)),
        ("Loss curves", f"![loss curves]({png.name})"),
        (
            "Samples (held-out test examples, beam search)",
            demo_report.samples_section(info["infer"].get("samples", [])),
        ),
        ("Corpus and tasks", demo_report.corpus_section(info["corpus"])),
        ("Setup", setup),
        ("Time", demo_report.timing_section({name: i.get("seconds") for name, i in info.items()})),
        (
            "Artefacts (relative to this directory)",
            demo_report.markdown_table(["artefact", "path"], ARTEFACTS),
        ),
        ("Commands run", commands or "(none recorded)"),
    ]
    report = demo_report.write_report(run.root / REPORT_FILE, "mesh-t5 demo report", sections)
    total = sum(float(i.get("seconds", 0)) for i in info.values())
    results = {"settings": dataclasses.asdict(s), "scores": scores, "steps": info, "total_seconds": total}
    (run.root / RESULTS_FILE).write_text(json.dumps(results, indent=2, default=str) + "\n")
    say(f"    report: {report}\n    loss curves: {png}")
    return {"report": str(report), "png": str(png)}


def step_train(run: Run, name: str) -> dict:
    """Pre-trains ("pretrain") or fine-tunes (the steps "finetune_<model>", see MODEL_DIRS) with `mesh-t5 train`."""
    s = run.settings
    vocab_size = (run.done("vocab") or {})["vocab_size"]
    lengths = f'{{"inputs": {s.inputs_length}, "targets": {s.targets_length}}}'
    argv = ["train", f"--gin_file=runs/{s.model_gin}"]
    model_dir = run.root / name
    if name == "pretrain":
        argv += ["--gin_file=runs/demo_pretrain.gin", f"--gin.TRAIN_STEPS={s.pretrain_steps}"]
    else:
        few = name.startswith("finetune_few_")
        steps = s.few_shot_steps if few else s.finetune_steps
        argv += ["--gin_file=runs/demo_finetune.gin"]
        if few:
            argv += [f'--gin.MIXTURE_OR_TASK_NAME="{demo_tasks.MIXTURE_FEW}"']
        if name.endswith("_pretrained"):  # TRAIN_STEPS counts the checkpoint's pre-training steps too
            argv += [
                f"--gin.INIT_CHECKPOINT={run.root / 'pretrain'}",
                f"--gin.TRAIN_STEPS={s.pretrain_steps + steps}",
            ]
        else:
            argv += [f"--gin.TRAIN_STEPS={steps}"]
    argv += [
        f"--gin.MODEL_DIR={model_dir}",
        f"--gin.T5Config.vocab_size={vocab_size}",
        f"--gin.BATCH_SIZE={s.batch_size}",
        f"--gin.TASK_FEATURE_LENGTHS={lengths}",
    ]
    mesh_t5(run, argv)
    curve = read_loss_curve(model_dir)
    if curve:
        say(f"    loss {curve[0][1]:.3f} at step {curve[0][0]} -> {curve[-1][1]:.3f} at step {curve[-1][0]}")
    return {
        "commands": [_shown(run, argv)],
        "model_dir": str(model_dir),
        "final_loss": curve[-1][1] if curve else None,
    }


def step_export(run: Run) -> dict:
    s = run.settings
    out = run.root / "saved_model"
    argv = [
        "export",
        f"--checkpoint={run.root / MODEL_DIRS['pretrained']}",
        f"--output_dir={out}",
        f"--beam_size={s.beam_size}",
        f"--max_input_length={s.inputs_length}",
        f"--max_decode_length={s.targets_length}",
    ]
    mesh_t5(run, argv)
    import tensorflow as tf
    import tensorflow_text  # noqa: F401  (registers the SentencePiece ops the graph uses)

    serve = tf.saved_model.load(str(out)).signatures["serving_default"]
    question = demo_corpus.FAMILY_PREFIX + "Return the event loop running in the current thread."
    outputs = serve(tf.constant([question]))
    key = next(k for k, v in outputs.items() if v.dtype == tf.string)
    answer = outputs[key].numpy()[0].decode("utf-8")
    say(f"    reloaded with tf.saved_model.load: {question!r} -> {answer!r}")
    return {"commands": [_shown(run, argv)], "path": str(out), "check": {"input": question, "output": answer}}


def _predict(run: Run, model: str, task: str, argv_extra: Sequence[str]) -> tuple[list[dict], list[str]]:
    """Runs `mesh-t5 infer` with a model on a task's test split (or a file); returns (records, argv)."""
    s = run.settings
    out = run.root / "predictions" / f"{model}_{task}.jsonl"
    argv = [
        "infer",
        f"--checkpoint={run.root / MODEL_DIRS[model]}",
        f"--output_file={out}",
        "--overwrite",
        f"--max_input_length={s.inputs_length}",
        f"--max_decode_length={s.targets_length}",
        *argv_extra,
    ]
    mesh_t5(run, argv)
    with open(out, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()], argv


def select_by_score(run: Run, model: str, examples: list[dict[str, str]]) -> tuple[list[str], list[str]]:
    """Picks each summarize example's summary line among its input sentences by the model's score.

    Rank classification: `mesh-t5 infer --mode=score` gives the log-likelihood of every input
    sentence as the target; the highest wins. Returns (picked sentences, argv).
    """
    pairs = [(i, c) for i, e in enumerate(examples) for c in demo_corpus.summarize_sentences(e["inputs"])]
    path = run.data / "summarize_candidates_test.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        for i, candidate in pairs:
            f.write(
                json.dumps({"inputs": examples[i]["inputs"], "targets": candidate}, ensure_ascii=False) + "\n"
            )
    records, argv = _predict(
        run, model, "summarize_scores", ["--mode=score", f"--input_file={path}",
                                         f"--max_target_length={run.settings.targets_length}"]
    )  # fmt: skip
    best: dict[int, tuple[float, str]] = {}
    for (i, candidate), record in zip(pairs, records, strict=True):
        if i not in best or record["score"] > best[i][0]:
            best[i] = (record["score"], candidate)
    return [best[i][1] for i in range(len(examples))], argv


def step_evaluate(run: Run) -> dict:
    """Scores every fine-tuned model on the test split next to the baselines, and compares the starts.

    family: greedy decoding, accuracy. summarize: the sentence the model scores highest
    (ROUGE under the plain names) and, for the full-data models, its greedy generation
    ("generated_*"). Each arm's pre-trained model is compared with its from-scratch one by a
    paired bootstrap over the same test examples (`demo_report.paired_bootstrap`).
    """
    from mesh_t5 import data
    from mesh_t5.data import metrics

    s = run.settings
    scores: dict[str, dict] = baselines(run)
    commands, picked = [], {}
    per_example: dict[str, dict[str, list[float]]] = {}
    for task_name in demo_report.HEADLINE_METRIC:
        task = data.get_task(task_name)
        examples = test_examples(run, task_name.removeprefix("demo_"))
        eval_file = write_jsonl(run.data / f"eval_{task_name}.jsonl", examples)
        targets = [task.postprocess(e["targets"], is_target=True) for e in examples]
        per_example[task_name] = {}
        for model in (*demo_report.MODELS, *demo_report.FEW_MODELS):
            result: dict[str, float] = {}
            if task_name == demo_tasks.FAMILY or model in demo_report.MODELS:
                records, argv = _predict(run, model, task_name, [f"--input_file={eval_file}"])
                commands.append(_shown(run, argv))
                predictions = [task.postprocess(r["outputs"]) for r in records]
                for metric_fn in task.metric_fns:
                    result.update({k: float(v) for k, v in metric_fn(targets, predictions).items()})
            if task_name == demo_tasks.SUMMARIZE:
                result = {f"generated_{k}": v for k, v in result.items()}
                picked[model], argv = select_by_score(run, model, examples)
                commands.append(_shown(run, argv))
                result.update(metrics.rouge(targets, picked[model]))
                predictions = picked[model]
            per_example[task_name][model] = demo_report.per_example_scores(task_name, targets, predictions)
            result["examples"] = len(examples)
            scores[task_name][model] = result
        metric = demo_report.HEADLINE_METRIC[task_name]
        say(
            f"    {task_name} {metric}: baseline {scores[task_name]['baseline'][metric]:.1f}; "
            + ", ".join(
                f"{label} {scores[task_name][m][metric]:.1f}" for m, label in demo_report.ALL_LABELS.items()
            )
        )
    comparisons = []
    train_counts = (run.done("corpus") or {}).get("task_examples", {})
    for arm, pre, scratch in (("all", "pretrained", "scratch"), ("few", "few_pretrained", "few_scratch")):
        for task_name in demo_report.HEADLINE_METRIC:
            short = task_name.removeprefix("demo_")
            n = s.few_shot_examples if arm == "few" else train_counts.get(short, {}).get("train", "?")
            by_model = per_example[task_name]
            comparison = {
                "arm": f"{n} training examples" + (" (few-example arm)" if arm == "few" else ""),
                "task": task_name,
                "metric": demo_report.METRIC_LABELS.get(demo_report.HEADLINE_METRIC[task_name], "accuracy"),
                "pretrained": sum(by_model[pre]) / len(by_model[pre]),
                "scratch": sum(by_model[scratch]) / len(by_model[scratch]),
                **demo_report.paired_bootstrap(by_model[pre], by_model[scratch]),
            }
            comparisons.append(comparison)
            say(
                f"    {comparison['arm']}, {task_name}: pre-trained - scratch = {comparison['difference']:+.1f} "
                f"[{comparison['low']:+.1f}, {comparison['high']:+.1f}]: {demo_report.transfer_verdict(comparison)}"
            )
    # The sentences picked for the examples step_infer shows (the first evaluated ones).
    shown = {
        model: sentences[: s.num_samples]
        for model, sentences in picked.items()
        if model in demo_report.MODELS
    }
    return {
        "commands": commands,
        "scores": scores,
        "comparisons": comparisons,
        "per_example": per_example,
        "picked": shown,
    }


def step_infer(run: Run) -> dict:
    """Beam-searches a few held-out test examples of each task with both fine-tuned models."""
    s = run.settings
    chosen = []
    for task in (
        "summarize",
        "family",
    ):  # the first evaluated ones, whose picked sentences step_evaluate kept
        chosen += [{"task": f"demo_{task}", **ex} for ex in test_examples(run, task)[: s.num_samples]]
    sample_file = write_jsonl(
        run.data / "samples.jsonl", [{"inputs": ex["inputs"], "targets": ex["targets"]} for ex in chosen]
    )
    commands, predictions = [], {}
    for model in ("pretrained", "scratch"):
        records, argv = _predict(
            run, model, "samples", [f"--input_file={sample_file}", f"--beam_size={s.beam_size}"]
        )
        commands.append(_shown(run, argv))
        predictions[model] = [r["outputs"] for r in records]
    picked = (run.done("evaluate") or {}).get("picked", {})
    samples = []
    for i, ex in enumerate(chosen):
        preds = {}
        for model, label in demo_report.MODELS.items():
            preds[f"{label}, generated"] = predictions[model][i]
            if ex["task"] == demo_tasks.SUMMARIZE and i < len(picked.get(model, [])):
                preds[f"{label}, picked by score"] = picked[model][i]
        samples.append(
            {"task": ex["task"], "inputs": ex["inputs"], "targets": ex["targets"], "predictions": preds}
        )
        say(f"    {ex['task']}: {ex['inputs'][:90]!r}...\n      target: {ex['targets']!r}")
        say("".join(f"      {name}: {pred!r}\n" for name, pred in preds.items()).rstrip())
    return {"commands": commands, "samples": samples}


# ------------------------------------------------------------------------------------------ main


def build_parser() -> argparse.ArgumentParser:
    parser = validate.ArgumentParser(
        prog="mesh-t5 demo",
        description="Pre-train, fine-tune, evaluate, decode and export a small T5 on the Python standard "
        "library's docstrings: offline, on a CPU, every step printed as the mesh-t5 command it runs.",
    )
    parser.add_argument(
        "--output_dir", default="mesh_t5_demo", help="where every artefact goes (default ./mesh_t5_demo)"
    )
    parser.add_argument("--quick", action="store_true", help="a ~2-minute smoke run (tiny model, few steps)")
    parser.add_argument(
        "--stdlib_dir",
        default=None,
        help="read docstrings from this Python library directory (default: this Python's)",
    )
    return parser


def main(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(list(argv))
    os.environ.setdefault(
        "TF_CPP_MIN_LOG_LEVEL", "2"
    )  # TensorFlow's start-up chatter would bury the progress
    validate.output_dir(args.output_dir, "--output_dir", empty=False)
    if args.stdlib_dir is not None:
        hint = "pass a Python library directory, e.g. /usr/lib/python3.12"
        validate.input_dir(args.stdlib_dir, "--stdlib_dir", hint)
        if not demo_corpus.stdlib_source_files(args.stdlib_dir):
            raise UserError(f"--stdlib_dir {args.stdlib_dir} holds no .py files; {hint}")
    settings = Settings.for_run(args.quick)
    run = Run(args.output_dir, settings)
    resuming = run.check_or_start()
    start = time.perf_counter()
    say(
        f"mesh-t5 demo{' --quick' if args.quick else ''}: the T5 recipe on stdlib docstrings -> {run.root}"
        + (" (resuming)" if resuming else "")
    )
    run_step(
        run,
        1,
        "corpus",
        "corpus: stdlib docstrings, cleaned with C4's rules",
        lambda: step_corpus(run, args.stdlib_dir),
    )
    run_step(run, 2, "vocab", "vocabulary: SentencePiece on the pre-training text", lambda: step_vocab(run))
    os.environ[demo_tasks.DEMO_DIR_ENV] = str(
        run.data
    )  # so the catalogue finds the demo tasks, here and in children
    demo_tasks.register_demo_tasks(run.data)
    for index, (name, title) in enumerate(
        (
            ("pretrain", "pre-training: span corruption on the docstrings"),
            ("finetune_pretrained", "fine-tuning the pre-trained model on the demo_finetune mixture"),
            ("finetune_scratch", "fine-tuning from scratch, same steps (the paper's comparison)"),
            (
                "finetune_few_pretrained",
                "low-resource arm: fine-tuning the pre-trained model on a few examples",
            ),
            ("finetune_few_scratch", "low-resource arm: fine-tuning from scratch on the same few examples"),
        ),
        start=3,
    ):
        run_step(run, index, name, title, lambda name=name: step_train(run, name))
    run_step(
        run,
        8,
        "evaluate",
        "evaluation on the held-out test split, against trivial baselines",
        lambda: step_evaluate(run),
    )
    run_step(run, 9, "infer", "beam-search predictions for held-out examples", lambda: step_infer(run))
    run_step(run, 10, "export", "SavedModel export (strings in, strings out)", lambda: step_export(run))
    run_step(run, 11, "report", "loss curves and report", lambda: step_report(run))
    say(f"\ndone in {time.perf_counter() - start:.0f}s: open {run.root / REPORT_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
