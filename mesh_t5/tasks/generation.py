"""C4 pre-training (T5's tasks and every objective of the paper), SQuAD, CNN/DailyMail and WMT tasks,
named and formatted as T5 registers them (t5/data/tasks.py)."""

from __future__ import annotations

import os

from mesh_t5.data import metrics
from mesh_t5.data.c4_output import C4_DIR_ENV, C4Source
from mesh_t5.data.objectives import OBJECTIVES, full_lm_preprocessors, unsupervised_preprocessors
from mesh_t5.data.preprocessors import append_eos_after_trim, summarize, tokenize, translate
from mesh_t5.data.registry import TaskRegistry
from mesh_t5.tasks import text_formats as fmt
from mesh_t5.tasks.common import DEFAULT_OUTPUT_FEATURES, CatalogueTask, add_tfds_task, qa

C4 = "c4/en:2.2.0"  # T5's version (the "v220" of the task names)
C4_SPLITS = ("train", "validation")
_TAIL = [tokenize, append_eos_after_trim]

# c4_v220_<objective> for every objective the paper compares; T5's own names are aliases:
# c4_v220_iid_denoising (i.i.d. noise, replace spans) and c4_v020_unsupervised (the default
# objective, span corruption, which the all_* mixtures use).
C4_TASKS = []
for objective in OBJECTIVES:
    add_tfds_task(f"c4_v220_{objective}", C4, C4_SPLITS, unsupervised_preprocessors(objective))
    C4_TASKS.append(f"c4_v220_{objective}")
add_tfds_task("c4_v220_iid_denoising", C4, C4_SPLITS, unsupervised_preprocessors("iid_replace_spans"))
add_tfds_task("c4_v020_unsupervised", C4, C4_SPLITS, unsupervised_preprocessors("span_corruption"))

# Decoder-only language modeling on C4 (the paper's Table 2 LM baseline): the whole chunk is the targets.
add_tfds_task("c4_v220_lm", C4, C4_SPLITS, full_lm_preprocessors())

# A corpus built here with `mesh-t5 c4` (README: Building C4), read from $MESH_T5_C4_DIR on first use.
TaskRegistry.add(
    CatalogueTask(
        "c4_local", C4Source(os.environ.get(C4_DIR_ENV, "")), unsupervised_preprocessors("span_corruption"),
        DEFAULT_OUTPUT_FEATURES,
    ),
    overwrite=True,
)  # fmt: skip

# SQuAD v1.1: punctuation padded as T5 ("question: A question ? context: Some context . "); the metric
# is EM/F1 maximised over all reference answers.
SQUAD = "squad/v1.1:3.0.0"
for name, include_context in (("squad_v010_allanswers", True), ("squad_v010_context_free", False)):
    add_tfds_task(
        name, SQUAD, ("train", "validation"), [fmt.squad(include_context), *_TAIL],
        postprocess_fn=qa, metric_fns=[metrics.squad], passthrough=("answers",),
    )  # fmt: skip

# T5 used cnn_dailymail:3.1.0; TFDS 4.9 only builds 3.4.0 (same articles and highlights, plus an id).
add_tfds_task(
    "cnn_dailymail_v002", "cnn_dailymail:3.4.0", ("train", "validation", "test"),
    [summarize("article", "highlights"), *_TAIL], metric_fns=[metrics.rouge],
)  # fmt: skip

# name: (TFDS name, source language code, target language code, source language, target language)
WMT = {
    "wmt14_ende_v003": ("wmt14_translate/de-en:1.0.0", "en", "de", "English", "German"),
    "wmt14_enfr_v003": ("wmt14_translate/fr-en:1.0.0", "en", "fr", "English", "French"),
    "wmt16_enro_v003": ("wmt16_translate/ro-en:1.0.0", "en", "ro", "English", "Romanian"),
    "wmt15_enfr_v003": ("wmt15_translate/fr-en:1.0.0", "en", "fr", "English", "French"),
    "wmt19_ende_v003": ("wmt19_translate/de-en:1.0.0", "en", "de", "English", "German"),
    "wmt_t2t_ende_v003": ("wmt_t2t_translate/de-en:1.0.0", "en", "de", "English", "German"),
}
for name, (tfds_name, src, tgt, src_lang, tgt_lang) in WMT.items():
    splits = ("train", "validation") if name.startswith("wmt19") else ("train", "validation", "test")
    add_tfds_task(
        name, tfds_name, splits, [translate(src, tgt, src_lang, tgt_lang), *_TAIL],
        metric_fns=[metrics.bleu],
    )  # fmt: skip
