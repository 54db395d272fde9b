"""One `mesh-t5 demo` run: its settings, its output directory (resume or refuse), and running its steps.

Each model step is an ordinary `mesh-t5` command, printed before it runs in this process (so that
JAX starts once); a printed command, copied into a shell, does the same.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from mesh_t5.demo import corpus as demo_corpus
from mesh_t5.demo import report as demo_report
from mesh_t5.errors import UserError

# A fine-tuning step is named like its model's directory (MODEL_DIRS).
STEPS = ("corpus", "vocab", "pretrain", "finetune_pretrained", "finetune_scratch", "finetune_few_pretrained",
         "finetune_few_scratch", "evaluate", "infer", "export", "report")  # fmt: skip
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
    few_shot_examples: int  # labelled examples per task, low-resource arm (256: at 64 no start learns family)
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
        return cls(False, 2000, "demo_model.gin", 600, 300, 256, 150, 32, 128, 32, 0, 5, 4)


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


def mesh_t5(argv: Sequence[str]) -> str:
    """Prints and runs `mesh-t5 ARGV` in this process; returns the command line (it runs the same in a shell)."""
    from mesh_t5 import cli

    shown = f"mesh-t5 {shlex.join(argv)}"
    say(f"    $ {shown}")
    code = cli.main(list(argv))  # starts from a clear gin config and clears its bindings when done
    if code:
        raise UserError(
            f"`mesh-t5 {argv[0]}` failed (exit {code}, message above); "
            "fix it and re-run the same demo command to resume"
        )
    return shown


def spread(examples: Sequence[dict], n: int) -> list[dict]:
    """Returns n examples evenly spaced over the list (all when n is 0 or too large).

    The task files are in module order, so the first n would all come from one or two families.
    """
    if not n or n >= len(examples):
        return list(examples)
    return [examples[i * len(examples) // n] for i in range(n)]


def test_examples(run: Run, task: str) -> list[dict[str, str]]:
    """Returns the test examples of "summarize" or "family" that evaluation decodes (eval_examples spread, or all)."""
    return spread(
        demo_corpus.read_examples(demo_corpus.task_file(run.data, task, "test")), run.settings.eval_examples
    )


# "pretrain" and each fine-tuned model ("pretrained", "scratch", "few_pretrained", "few_scratch") -> its MODEL_DIR.
MODEL_DIRS = {"pretrain": "pretrain", **{m: f"finetune_{m}" for m in demo_report.ALL_LABELS}}
