"""The demo's evaluation steps: test-split scores against trivial baselines, pre-trained vs scratch
compared per example, and beam-search samples. Every model call is a printed `mesh-t5 infer`."""

from __future__ import annotations

from collections.abc import Sequence

from mesh_t5.demo import corpus as demo_corpus
from mesh_t5.demo import report as demo_report
from mesh_t5.demo import tasks as demo_tasks
from mesh_t5.demo.run import MODEL_DIRS, Run, mesh_t5, say, test_examples


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
    train = demo_corpus.read_examples(demo_corpus.task_file(run.data, "family", "train"))
    label = demo_corpus.majority_label([e["targets"] for e in train])
    test = test_examples(run, "family")
    majority = metrics.accuracy([e["targets"] for e in test], [label] * len(test))
    return {
        demo_tasks.SUMMARIZE: {"baseline": lead, "shortest": shortest},
        demo_tasks.FAMILY: {"baseline": {**majority, "label": label}},
    }


def predict(run: Run, model: str, name: str, argv_extra: Sequence[str]) -> tuple[list[dict], str]:
    """Runs `mesh-t5 infer` with a model (predictions/<model>_<name>.jsonl); returns (records, command)."""
    s = run.settings
    out = run.root / "predictions" / f"{model}_{name}.jsonl"
    argv = [
        "infer", f"--checkpoint={run.root / MODEL_DIRS[model]}", f"--output_file={out}", "--overwrite",
        f"--max_input_length={s.inputs_length}", f"--max_decode_length={s.targets_length}", *argv_extra,
    ]  # fmt: skip
    command = mesh_t5(argv)
    return demo_corpus.read_examples(out), command


def select_by_score(run: Run, model: str, examples: list[dict[str, str]]) -> tuple[list[str], str]:
    """Picks each summarize example's summary line among its input sentences by the model's score.

    Rank classification: `mesh-t5 infer --mode=score` gives the log-likelihood of every input
    sentence as the target; the highest wins. Returns (picked sentences, command).
    """
    pairs = [(i, c) for i, e in enumerate(examples) for c in demo_corpus.summarize_sentences(e["inputs"])]
    path = demo_corpus.write_jsonl(
        run.data / "summarize_candidates_test.jsonl",
        ({"inputs": examples[i]["inputs"], "targets": candidate} for i, candidate in pairs),
    )
    records, command = predict(
        run, model, "summarize_scores",
        ["--mode=score", f"--input_file={path}", f"--max_target_length={run.settings.targets_length}"],
    )  # fmt: skip
    best: dict[int, tuple[float, str]] = {}
    for (i, candidate), record in zip(pairs, records, strict=True):
        if i not in best or record["score"] > best[i][0]:
            best[i] = (record["score"], candidate)
    return [best[i][1] for i in range(len(examples))], command


def step_evaluate(run: Run) -> dict:
    """Scores every fine-tuned model on the test split next to the baselines, and compares the starts.

    family: greedy decoding, accuracy. summarize: the sentence the model scores highest
    (ROUGE under the plain names) and, for the full-data models, its greedy generation
    ("generated_*"). Each arm's pre-trained model is compared with its from-scratch one by a
    paired bootstrap over the same test examples (`demo_report.paired_bootstrap`), on the headline
    metric and on the log-likelihood each model gives the reference target ("likelihood").
    """
    from mesh_t5 import data
    from mesh_t5.data import metrics

    s = run.settings
    scores: dict[str, dict] = baselines(run)
    commands, picked = [], {}
    per_example: dict[str, dict[str, list[float]]] = {}
    likelihood: dict[str, dict[str, list[float]]] = {}  # {task: {model: [log p(target) per test example]}}
    for task_name in demo_report.HEADLINE_METRIC:
        task = data.get_task(task_name)
        examples = test_examples(run, task_name.removeprefix("demo_"))
        eval_file = demo_corpus.write_jsonl(run.data / f"eval_{task_name}.jsonl", examples)
        targets = [task.postprocess(e["targets"], is_target=True) for e in examples]
        per_example[task_name], likelihood[task_name] = {}, {}
        for model in demo_report.ALL_LABELS:
            result: dict[str, float] = {}
            if task_name == demo_tasks.FAMILY or model in demo_report.MODELS:
                records, command = predict(run, model, task_name, [f"--input_file={eval_file}"])
                commands.append(command)
                predictions = [task.postprocess(r["outputs"]) for r in records]
                for metric_fn in task.metric_fns:
                    result.update({k: float(v) for k, v in metric_fn(targets, predictions).items()})
            if task_name == demo_tasks.SUMMARIZE:
                result = {f"generated_{k}": v for k, v in result.items()}
                picked[model], command = select_by_score(run, model, examples)
                commands.append(command)
                result.update(metrics.rouge(targets, picked[model]))
                predictions = picked[model]
            per_example[task_name][model] = demo_report.per_example_scores(task_name, targets, predictions)
            records, command = predict(run, model, f"{task_name}_targets", ["--mode=score", f"--input_file={eval_file}",
                                                                            f"--max_target_length={s.targets_length}"])  # fmt: skip
            commands.append(command)
            likelihood[task_name][model] = [r["score"] for r in records]
            result["examples"] = len(examples)
            scores[task_name][model] = result
        metric = demo_report.HEADLINE_METRIC[task_name]
        models = ", ".join(
            f"{label} {scores[task_name][m][metric]:.1f}" for m, label in demo_report.ALL_LABELS.items()
        )
        say(f"    {task_name} {metric}: baseline {scores[task_name]['baseline'][metric]:.1f}; {models}")
    comparisons, likelihoods = [], []
    train_counts = (run.done("corpus") or {}).get("task_examples", {})
    for arm, pre, scratch in (("all", "pretrained", "scratch"), ("few", "few_pretrained", "few_scratch")):
        for task_name, metric in demo_report.HEADLINE_METRIC.items():
            n = (
                s.few_shot_examples
                if arm == "few"
                else train_counts.get(task_name.removeprefix("demo_"), {}).get("train", "?")
            )
            arm_name = f"{n} training examples" + (" (few-example arm)" if arm == "few" else "")
            for rows, label, by_model in ((comparisons, demo_report.METRIC_LABELS.get(metric, metric), per_example),
                                          (likelihoods, demo_report.LIKELIHOOD_LABEL, likelihood)):  # fmt: skip
                a, b = by_model[task_name][pre], by_model[task_name][scratch]
                c = {"arm": arm_name, "task": task_name, "metric": label, "pretrained": sum(a) / len(a),
                     "scratch": sum(b) / len(b), **demo_report.paired_bootstrap(a, b)}  # fmt: skip
                rows.append(c)
                say(
                    f"    {arm_name}, {task_name}, {label}: pre-trained - scratch = {c['difference']:+.1f} "
                    f"[{c['low']:+.1f}, {c['high']:+.1f}]: {demo_report.transfer_verdict(c)}"
                )
    # The sentences picked for the examples step_infer shows (the first evaluated ones).
    shown = {model: picked[model][: s.num_samples] for model in demo_report.MODELS}
    return {
        "commands": commands, "scores": scores, "comparisons": comparisons, "likelihoods": likelihoods,
        "per_example": per_example, "likelihood": likelihood, "picked": shown,
    }  # fmt: skip


def step_infer(run: Run) -> dict:
    """Beam-searches a few held-out test examples of each task with both fine-tuned models."""
    s = run.settings
    # The first evaluated examples, whose picked sentences step_evaluate kept.
    chosen = [
        {"task": f"demo_{task}", **ex}
        for task in ("summarize", "family")
        for ex in test_examples(run, task)[: s.num_samples]
    ]
    sample_file = demo_corpus.write_jsonl(
        run.data / "samples.jsonl", ({"inputs": ex["inputs"], "targets": ex["targets"]} for ex in chosen)
    )
    commands, predictions = [], {}
    for model in demo_report.MODELS:
        records, command = predict(
            run, model, "samples", [f"--input_file={sample_file}", f"--beam_size={s.beam_size}"]
        )
        commands.append(command)
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
