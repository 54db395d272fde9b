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
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from mesh_t5 import validate
from mesh_t5.demo import corpus as demo_corpus
from mesh_t5.demo import report as demo_report
from mesh_t5.demo import tasks as demo_tasks
from mesh_t5.demo.evaluate import step_evaluate, step_infer
from mesh_t5.demo.run import (
    MODEL_DIRS,
    REPORT_FILE,
    RESULTS_FILE,
    STEPS,
    Run,
    Settings,
    mesh_t5,
    run_step,
    say,
)
from mesh_t5.errors import UserError

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
        train = demo_corpus.read_examples(demo_corpus.task_file(run.data, task, "train"))
        # A seeded random draw over the whole file (it is in module order, so families cluster).
        few = random.Random(f"few:{task}").sample(train, min(run.settings.few_shot_examples, len(train)))
        demo_corpus.write_jsonl(run.data / demo_tasks.FEW_SHOT_FILE.format(task=task), few)
        few_counts[task] = len(few)
    say(
        f"    {counters['docstrings']} docstrings in {counters['files']} files -> {len(docs)} clean documents "
        f"({sum(len(d.text) for d in docs) / 1e6:.2f} MB); pre-training text {sizes['train'] / 1e6:.2f} MB"
    )
    for task, by_split in counts.items():
        say(f"    task {task}: " + ", ".join(f"{n} {split}" for split, n in by_split.items()))
    return {"counters": dict(counters), "documents": len(docs), "pretrain_bytes": sizes, "task_examples": counts,
            "few_shot_examples": few_counts}  # fmt: skip


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


def read_loss_curve(model_dir: Path, offset: int = 0) -> list[tuple[int, float]]:
    """Returns [(step - offset, training loss)] from the TensorBoard events of a `mesh-t5 train` run ([] if none)."""
    from mesh_t5.logging_utils import read_scalars

    log_dir = model_dir / "train"
    scalars = read_scalars(str(log_dir)) if log_dir.is_dir() else {}
    return sorted((step - offset, loss) for step, loss in scalars.get("loss", []))


ARTEFACTS = (
    ("cleaned corpus (JSONL)", "data/corpus.jsonl"),
    ("task files", "data/summarize_*.jsonl, data/family_*.jsonl, data/pretrain_*.txt"),
    ("SentencePiece model", f"data/{demo_tasks.VOCAB_FILE}"),
    ("the demo's tasks for mesh-t5 commands (--gin_file)", demo_tasks.GIN_FILE),
    ("pre-trained checkpoint", f"{MODEL_DIRS['pretrain']}/checkpoints/"),
    ("fine-tuned checkpoints", "finetune_*/checkpoints/"),
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
    arms = (("all examples", "pretrained", "scratch"),
            (f"{run.settings.few_shot_examples} examples per task", "few_pretrained", "few_scratch"))  # fmt: skip
    curves = {"pre-training (span corruption)": {"pre-training": pretrain_curve}}
    for data, pre, scratch in arms:
        curves[f"fine-tuning on {data}, steps since it began"] = {
            "from the pre-trained checkpoint": read_loss_curve(run.root / MODEL_DIRS[pre], offset),
            "from scratch": read_loss_curve(run.root / MODEL_DIRS[scratch]),
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
            demo_report.transfer_section(
                info["evaluate"].get("comparisons", []) + info["evaluate"].get("likelihoods", [])
            ),
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
        f"--gin_file={run.root / demo_tasks.GIN_FILE}",  # the demo's tasks over this run's data
        f"--gin.MODEL_DIR={model_dir}",
        f"--gin.T5Config.vocab_size={vocab_size}",
        f"--gin.BATCH_SIZE={s.batch_size}",
        f"--gin.TASK_FEATURE_LENGTHS={lengths}",
    ]
    command = mesh_t5(argv)
    curve = read_loss_curve(model_dir)
    if curve:
        say(f"    loss {curve[0][1]:.3f} at step {curve[0][0]} -> {curve[-1][1]:.3f} at step {curve[-1][0]}")
    return {"commands": [command], "model_dir": str(model_dir), "final_loss": curve[-1][1] if curve else None}


def step_export(run: Run) -> dict:
    s = run.settings
    out = run.root / "saved_model"
    command = mesh_t5([
        "export", f"--checkpoint={run.root / MODEL_DIRS['pretrained']}", f"--output_dir={out}",
        f"--beam_size={s.beam_size}", f"--max_input_length={s.inputs_length}", f"--max_decode_length={s.targets_length}",
    ])  # fmt: skip
    import tensorflow as tf
    import tensorflow_text  # noqa: F401  (registers the SentencePiece ops the graph uses)

    serve = tf.saved_model.load(str(out)).signatures["serving_default"]
    question = demo_corpus.FAMILY_PREFIX + "Return the event loop running in the current thread."
    outputs = serve(tf.constant([question]))
    key = next(k for k, v in outputs.items() if v.dtype == tf.string)
    answer = outputs[key].numpy()[0].decode("utf-8")
    say(f"    reloaded with tf.saved_model.load: {question!r} -> {answer!r}")
    return {"commands": [command], "path": str(out), "check": {"input": question, "output": answer}}


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
    (run.root / demo_tasks.GIN_FILE).write_text(demo_tasks.gin_file_text(run.data))
    train_titles = {
        "pretrain": "pre-training: span corruption on the docstrings",
        "finetune_pretrained": "fine-tuning the pre-trained model on the demo_finetune mixture",
        "finetune_scratch": "fine-tuning from scratch, same steps (the paper's comparison)",
        "finetune_few_pretrained": "low-resource arm: fine-tuning the pre-trained model on a few examples",
        "finetune_few_scratch": "low-resource arm: fine-tuning from scratch on the same few examples",
    }
    steps = {
        "corpus": (
            "corpus: stdlib docstrings, cleaned with C4's rules",
            lambda: step_corpus(run, args.stdlib_dir),
        ),
        "vocab": ("vocabulary: SentencePiece on the pre-training text", lambda: step_vocab(run)),
        **{name: (title, lambda name=name: step_train(run, name)) for name, title in train_titles.items()},
        "evaluate": (
            "evaluation on the held-out test split, against trivial baselines",
            lambda: step_evaluate(run),
        ),
        "infer": ("beam-search predictions for held-out examples", lambda: step_infer(run)),
        "export": ("SavedModel export (strings in, strings out)", lambda: step_export(run)),
        "report": ("loss curves and report", lambda: step_report(run)),
    }
    for index, name in enumerate(STEPS, start=1):
        run_step(run, index, name, *steps[name])
    say(f"\ndone in {time.perf_counter() - start:.0f}s: open {run.root / REPORT_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
