"""The tasks and mixtures of the paper's study (Raffel et al. 2020, Tables 6-14) that the rest of the
catalogue does not have; `mesh-t5 experiments` lists the configurations that use them.

- Corruption rate (Table 6): the baseline objective (i.i.d. noise, replace spans) at 10/25/50% as
  `c4_v220_iid_denoising_rate{10,25,50}`; span corruption at those rates as
  `c4_v220_span_corruption_rate{10,25,50}` (15% is the plain task of either objective).
- Mean span length (Table 7): `c4_v220_span_corruption_span{2,5,10}` at 15% (3 is `c4_v220_span_corruption`).
- Pre-training data sets (Table 8): `{c4_noclean,c4_realnewslike,c4_webtextlike,wikipedia}_<objective>`
  for the baseline objective (iid_denoising) and span_corruption, over T5's TFDS datasets; the Toronto
  Books Corpus (not in TFDS) from the text files $MESH_T5_TBC_FILES names; `wikipedia_tbc_<objective>`
  mixes the two in proportion to their sizes in Table 8 (16 GB and 4 GB), as if concatenated.
- Repeated data (Table 9): `c4_v220_iid_denoising_2^{29,27,25,23}_tokens`: the first 2^N tokens of C4
  (counted after tokenization), repeated (`Source.max_tokens`).
- Multi-task mixtures (Tables 11-12): every downstream task of the study plus the unsupervised task,
  mixed by r_m = min(e_m, K) (examples-proportional, K = 2^16 ... 2^21), by min(e_m, 2^21)^(1/T)
  (temperature T = 2, 4, 8) or equally; `paper_mt_leave_one_out_<benchmark>` without one benchmark's
  tasks and `paper_mt_supervised` without the unsupervised task (both K = 2^19).
- The final T5 models' pre-training mixtures (Table 14): `paper_t5_final_<size>`.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator

from mesh_t5.data.mixing import rate_num_examples
from mesh_t5.data.objectives import unsupervised_preprocessors
from mesh_t5.data.registry import MixtureRegistry, TaskRegistry
from mesh_t5.data.sources import Source, TextLineSource, TfdsSource
from mesh_t5.errors import UserError
from mesh_t5.tasks.common import DEFAULT_OUTPUT_FEATURES, TFDS_DATA_DIR, CatalogueTask, add_tfds_task
from mesh_t5.tasks.generation import C4, C4_SPLITS
from mesh_t5.tasks.glue import GLUE_WEIGHT_MAPPING, SUPER_GLUE_WEIGHT_MAPPING

# The objective of the paper's baseline (Section 3.1.4) and of the final T5 models (Section 3.7).
OBJECTIVES = {"iid_denoising": ("iid_replace_spans", {}), "span_corruption": ("span_corruption", {})}

for _rate in (10, 25, 50):
    _density = {"noise_density": _rate / 100}
    add_tfds_task(
        f"c4_v220_iid_denoising_rate{_rate}", C4, C4_SPLITS, unsupervised_preprocessors("iid_replace_spans", **_density)
    )  # fmt: skip
    add_tfds_task(
        f"c4_v220_span_corruption_rate{_rate}", C4, C4_SPLITS, unsupervised_preprocessors("span_corruption", **_density)
    )  # fmt: skip
for _span in (2, 5, 10):
    add_tfds_task(
        f"c4_v220_span_corruption_span{_span}", C4, C4_SPLITS,
        unsupervised_preprocessors("span_corruption", mean_noise_span_length=float(_span)),
    )  # fmt: skip

# Table 8. T5 registered c4/en.noclean etc. at 2.2.0 (its `c4_noclean_v020_unsupervised`...); the TFDS
# config names of the news and WebText filters are "realnewslike" and "webtextlike" (no "en.").
PRETRAINING_DATASETS = {
    "c4_noclean": "c4/en.noclean:2.2.0",
    "c4_realnewslike": "c4/realnewslike:2.2.0",
    "c4_webtextlike": "c4/webtextlike:2.2.0",
    "wikipedia": "wikipedia/20190301.en:1.0.0",  # T5's wikipedia_20190301.en_v003_unsupervised
}
TBC_ENV = "MESH_T5_TBC_FILES"


class EnvFilesSource(Source):
    """Text lines (one example {"text": line} each) from the files a glob in an environment variable
    names, read on first use: registering the task needs no data.

    Reads go to a TextLineSource over the variable's current value (made again if it changes), so
    the files are counted once, a resumed run seeks to its record and hosts read contiguous shards,
    as with any file source; drops are counted in this source's `dropped`.
    """

    def __init__(self, env: str, what: str, max_tokens: int | None = None):
        super().__init__(max_tokens)
        self.env, self.what = env, what
        self._source: tuple[str, TextLineSource] | None = None  # (pattern, its source)

    @property
    def splits(self) -> tuple[str, ...]:
        return ("train",)

    def _files(self) -> TextLineSource:
        pattern = os.environ.get(self.env)
        if not pattern:
            raise UserError(
                f"{self.what} is not in TFDS: set {self.env}=/path/to/*.txt (your copy, one paragraph per line)"
            )
        if self._source is None or self._source[0] != pattern:
            source = TextLineSource({"train": pattern})
            source.dropped = self.dropped
            self._source = (pattern, source)
        return self._source[1]

    def num_examples(self, split: str) -> int | None:
        self.check_split(split)
        return self._files().num_examples(split)

    def read(self, split: str, start: int, stop: int) -> Iterator[dict | None]:
        self.check_split(split)
        return self._files().read(split, start, stop)

    def describe(self, split: str) -> str:
        return f"${self.env} ({os.environ.get(self.env) or 'unset'})"


for _objective, (_name, _kwargs) in OBJECTIVES.items():
    for _prefix, _tfds_name in PRETRAINING_DATASETS.items():
        _splits = ("train",) if _prefix == "wikipedia" else C4_SPLITS  # TFDS wikipedia has one split
        add_tfds_task(
            f"{_prefix}_{_objective}", _tfds_name, _splits, unsupervised_preprocessors(_name, **_kwargs)
        )
    TaskRegistry.add(
        CatalogueTask(
            f"toronto_books_{_objective}", EnvFilesSource(TBC_ENV, "the Toronto Books Corpus"),
            unsupervised_preprocessors(_name, **_kwargs), DEFAULT_OUTPUT_FEATURES,
        ),
        overwrite=True,
    )  # fmt: skip
    MixtureRegistry.add(
        f"wikipedia_tbc_{_objective}", [(f"wikipedia_{_objective}", 16.0), (f"toronto_books_{_objective}", 4.0)],
        overwrite=True,
    )  # fmt: skip

# Table 9: "truncated variants of C4 consisting of 2^29, 2^27, 2^25 and 2^23 tokens", repeated 64 to
# 4,096 times over the 2^35 tokens of pre-training.
REPEATED_TOKENS = (29, 27, 25, 23)
for _power in REPEATED_TOKENS:
    TaskRegistry.add(
        CatalogueTask(
            f"c4_v220_iid_denoising_2^{_power}_tokens",
            TfdsSource(C4, data_dir=TFDS_DATA_DIR, splits=C4_SPLITS, max_tokens=2**_power),
            unsupervised_preprocessors("iid_replace_spans"), DEFAULT_OUTPUT_FEATURES,
        ),
        overwrite=True,
    )  # fmt: skip

# ----------------------------------------------------------------------------- multi-task mixtures

UNSUPERVISED = "c4_v220_iid_denoising"  # the study's unsupervised task (its baseline objective)
# The paper's seven benchmarks (its table columns) -> the tasks each fine-tunes on and the names of
# their tasks in the multi-task mixtures (GLUE and SuperGLUE are one "task" each, concatenated).
BENCHMARK_TASKS = {
    "GLUE": ("glue_v002_proportional", list(GLUE_WEIGHT_MAPPING)),
    "CNNDM": ("cnn_dailymail_v002", ["cnn_dailymail_v002"]),
    "SQuAD": ("squad_v010_allanswers", ["squad_v010_allanswers"]),
    "SGLUE": ("super_glue_v102_proportional", list(SUPER_GLUE_WEIGHT_MAPPING)),
    "EnDe": ("wmt_t2t_ende_v003", ["wmt_t2t_ende_v003"]),
    "EnFr": ("wmt15_enfr_v003", ["wmt15_enfr_v003"]),
    "EnRo": ("wmt16_enro_v003", ["wmt16_enro_v003"]),
}
FIXED_SIZES = {**GLUE_WEIGHT_MAPPING, **SUPER_GLUE_WEIGHT_MAPPING}  # training-set sizes, known without data


def capped_rate(task: str, maximum: float | None, temperature: float = 1.0):
    """Returns the mixing rate of `task`: min(e, maximum) ** (1 / temperature), e = its number of training
    examples (GLUE and SuperGLUE sizes fixed as in T5, so that listing rates needs no data for them)."""
    if task not in FIXED_SIZES:
        return functools.partial(rate_num_examples, maximum=maximum, temperature=temperature)
    size = FIXED_SIZES[task] if maximum is None else min(FIXED_SIZES[task], maximum)
    return size ** (1.0 / temperature)


def _mixture(name: str, supervised: list[str], maximum: float | None, temperature: float = 1.0,
             unsupervised: str | None = UNSUPERVISED, unsupervised_size: float | None = None) -> None:  # fmt: skip
    entries = [(t, capped_rate(t, maximum, temperature)) for t in supervised]
    if unsupervised:
        # C4 (about 365M documents) is larger than every K, so min(e, K) = K.
        size = unsupervised_size if unsupervised_size is not None else maximum
        entries.append((unsupervised, float(size) ** (1.0 / temperature)))
    MixtureRegistry.add(name, entries, overwrite=True)


STUDY_TASKS = [t for _, tasks in BENCHMARK_TASKS.values() for t in tasks]

MixtureRegistry.add("paper_mt_equal", [*STUDY_TASKS, UNSUPERVISED], default_rate=1.0, overwrite=True)
for _k in range(16, 22):
    _mixture(f"paper_mt_proportional_k2^{_k}", STUDY_TASKS, 2.0**_k)
for _t in (2, 4, 8):
    _mixture(f"paper_mt_temperature_t{_t}", STUDY_TASKS, 2.0**21, temperature=float(_t))
for _bench, (_, _tasks) in BENCHMARK_TASKS.items():
    _mixture(f"paper_mt_leave_one_out_{_bench.lower()}", [t for t in STUDY_TASKS if t not in _tasks], 2.0**19)
_mixture("paper_mt_supervised", STUDY_TASKS, 2.0**19, unsupervised=None)

# Table 14's models: multi-task pre-training with span corruption, whose "artificial data set size" grows
# with the model, WMT En-Fr and En-De capped at 1M examples, the rest examples-proportional uncapped.
FINAL_UNSUPERVISED_SIZE = {
    "small": 710_000,
    "base": 2_620_000,
    "large": 8_660_000,
    "3b": 33_500_000,
    "11b": 133_000_000,
}
for _size, _unsupervised in FINAL_UNSUPERVISED_SIZE.items():
    MixtureRegistry.add(
        f"paper_t5_final_{_size}",
        [
            *[(t, capped_rate(t, 1e6 if t in ("wmt_t2t_ende_v003", "wmt15_enfr_v003") else None)) for t in STUDY_TASKS],
            ("c4_v220_span_corruption", float(_unsupervised)),
        ],
        overwrite=True,
    )  # fmt: skip
