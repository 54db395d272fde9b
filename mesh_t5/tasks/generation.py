"""C4 pre-training (every objective of the paper), SQuAD, CNN/DailyMail and WMT tasks."""

from __future__ import annotations

from mesh_t5.data import metrics
from mesh_t5.data.objectives import OBJECTIVES, unsupervised_preprocessors
from mesh_t5.data.preprocessors import append_eos_after_trim, squad, summarize, tokenize, translate
from mesh_t5.data.registry import Feature, TaskRegistry
from mesh_t5.data.sources import TfdsSource
from mesh_t5.tasks.common import DEFAULT_OUTPUT_FEATURES, DEFAULT_VOCABULARY, TFDS_DATA_DIR, squad_answers

C4 = "c4/en:3.0.1"

# Span corruption is T5's objective; the others are the paper's Table 3-4 baselines.
C4_TASKS = []
for objective in OBJECTIVES:
    name = "c4_v220_span_corruption" if objective == "span_corruption" else f"c4_v220_{objective}"
    TaskRegistry.add(
        name,
        TfdsSource(C4, data_dir=TFDS_DATA_DIR, splits=("train", "validation")),
        unsupervised_preprocessors(objective),
        DEFAULT_OUTPUT_FEATURES,
        overwrite=True,
    )
    C4_TASKS.append(name)

# Decoder-only language modeling on C4 (the paper's Table 2 LM baseline): targets only.
TaskRegistry.add(
    "c4_v220_lm",
    TfdsSource(C4, data_dir=TFDS_DATA_DIR, splits=("train", "validation")),
    unsupervised_preprocessors("prefix_lm", noise_density=0.5),
    {"inputs": Feature(DEFAULT_VOCABULARY, required=False), "targets": Feature(DEFAULT_VOCABULARY)},
    overwrite=True,
)

TaskRegistry.add(
    "squad_v010_allanswers",
    TfdsSource("squad/v1.1:3.0.0", data_dir=TFDS_DATA_DIR, splits=("train", "validation")),
    [squad, tokenize, append_eos_after_trim],
    DEFAULT_OUTPUT_FEATURES,
    postprocess_fn=squad_answers,
    metric_fns=[metrics.squad],
    overwrite=True,
)

TaskRegistry.add(
    "cnn_dailymail_v002",
    TfdsSource("cnn_dailymail:3.4.0", data_dir=TFDS_DATA_DIR, splits=("train", "validation", "test")),
    [summarize("article", "highlights"), tokenize, append_eos_after_trim],
    DEFAULT_OUTPUT_FEATURES,
    metric_fns=[metrics.rouge],
    overwrite=True,
)

WMT = {
    "wmt_t2t_ende_v003": ("wmt_t2t_translate/de-en:1.0.0", "en", "de", "English", "German"),
    "wmt14_enfr_v003": ("wmt14_translate/fr-en:1.0.0", "en", "fr", "English", "French"),
    "wmt16_enro_v003": ("wmt16_translate/ro-en:1.0.0", "en", "ro", "English", "Romanian"),
}
for name, (tfds_name, src, tgt, src_lang, tgt_lang) in WMT.items():
    TaskRegistry.add(
        name,
        TfdsSource(tfds_name, data_dir=TFDS_DATA_DIR, splits=("train", "validation", "test")),
        [translate(src, tgt, src_lang, tgt_lang), tokenize, append_eos_after_trim],
        DEFAULT_OUTPUT_FEATURES,
        metric_fns=[metrics.bleu],
        overwrite=True,
    )
