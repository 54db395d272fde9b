"""C4 pipeline speed: pages/s per core of `mesh-t5 c4` on the DirectRunner (one worker, in memory) against
TFDS's `c4_utils.clean_page` in a plain Python loop over the same pages, and the CPU-hours per TB it implies.

    PYTHONPATH=. python benchmarks/c4_pipeline.py --pages=2000 [--language_detector=py3langid]

The pages are synthetic English (seeded): 30 lines each, of which a third are boilerplate the rules drop
(menus, short lines, cookie notices), so every step has work. CPU time is the process's own (user + sys),
which is what a core-hour costs; wall time is printed too (the machine may be shared).
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import shutil
import sys
import tempfile
import time

WORDS = (  # noqa: SIM905 (a word list reads best as text)
    "the of and to in is was for that with as on by at from his her their which have this are were an "
    "be had it not or but all new first time year people water river city world school family history "
    "music small great house during after between under through about against part number system "
    "government company children story morning light garden village winter summer library letter "
    "market teacher doctor island mountain"
).split()
BOILERPLATE = [
    "Home | About | Contact",
    "Share this",
    "Log in",
    "We use cookies to improve your experience.",
    "Menu",
]


def synthetic_pages(n: int, seed: int = 0) -> list[tuple[str, str, str]]:
    rng = random.Random(seed)
    pages = []
    for i in range(n):
        lines = []
        for _ in range(30):
            if rng.random() < 1 / 3:
                lines.append(rng.choice(BOILERPLATE))
            else:
                words = [rng.choice(WORDS) for _ in range(rng.randint(8, 20))]
                lines.append(" ".join(words).capitalize() + rng.choice([".", ".", ".", "?", "!"]))
        pages.append(
            (f"http://site{i % 97}.example.com/{i}", f"2019-04-{1 + i % 28:02d}T00:00:00Z", "\n".join(lines))
        )
    return pages


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def best_cpu(loop, repeats: int = 3) -> float:
    """The least CPU time of `repeats` runs of `loop()` (a loaded machine only ever adds time)."""
    times = []
    for _ in range(repeats):
        c0 = cpu_seconds()
        loop()
        times.append(cpu_seconds() - c0)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pages", type=int, default=4000)
    parser.add_argument("--files", type=int, default=4)
    parser.add_argument("--language_detector", default="langdetect", choices=("langdetect", "py3langid"))
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    import punkt
    from nltk.tokenize import punkt as nltk_punkt
    from tensorflow_datasets.text import c4_utils

    from mesh_t5.data import c4_beam, wet

    pages = synthetic_pages(args.pages)
    text_bytes = sum(len(t.encode("utf-8")) for _, _, t in pages)
    tmp = tempfile.mkdtemp(prefix="c4bench-")
    per_file = -(-len(pages) // args.files)
    for f in range(args.files):
        wet.write_wet_file(
            f"{tmp}/in-{f}.wet.gz", [wet.Page(*p) for p in pages[f * per_file : (f + 1) * per_file]]
        )

    # TFDS's clean_page with NLTK's Punkt (the packaged English parameters: TFDS would download them).
    model = punkt.load_model("english")
    params = nltk_punkt.PunktParameters()
    params.abbrev_types, params.collocations = set(model.abbrev_types), set(model.collocations)
    params.sent_starters = set(model.sent_starters)
    for word, flags in dict(model.ortho_context).items():
        params.ortho_context[word] = flags
    c4_utils._SENTENCE_TOKENIZER = nltk_punkt.PunktSentenceTokenizer(params)
    regex = c4_utils.get_clean_page_fn().keywords["citation_regex"]
    features = [c4_utils.PageFeatures(url=u, text=t, timestamp=d) for u, d, t in pages]
    # Warm-up outside the timers: TFDS's first sentence split imports TensorFlow (tf.compat.as_text),
    # and the pipeline's shard writer imports it too; seconds of CPU that are not per-page work.
    import tensorflow  # noqa: F401

    list(c4_utils.clean_page(features[0], regex, counter_inc_fn=lambda *a: None))
    kept = sum(1 for p in features for _ in c4_utils.clean_page(p, regex, counter_inc_fn=lambda *a: None))

    def tfds_loop() -> None:
        for p in features:
            list(c4_utils.clean_page(p, regex, counter_inc_fn=lambda *a: None))

    tfds_cpu = best_cpu(tfds_loop)

    # The same cleaning with ours (packaged Punkt), and langdetect alone: where the job's time goes.
    from mesh_t5.data import c4_filters

    split = c4_beam.sentence_splitter("en")

    def ours_loop() -> None:
        for _, _, t in pages:
            c4_filters.clean_page(t, sentence_splitter=split)

    ours_clean_cpu = best_cpu(ours_loop)
    language = c4_beam.LanguageFn("en", 0.99)
    list(language.process({"text": pages[0][2]}))  # loads langdetect's profiles
    c0 = cpu_seconds()
    for _, _, t in pages:
        list(language.process({"text": t}))
    langdetect_cpu = cpu_seconds() - c0
    langid = c4_beam.LanguageFn("en", 0.99, "py3langid")
    langid.setup()
    list(langid.process({"text": pages[0][2]}))
    c0 = cpu_seconds()
    for _, _, t in pages:
        list(langid.process({"text": t}))
    langid_cpu = cpu_seconds() - c0

    beam_args = ["--runner=DirectRunner", "--direct_num_workers=1", "--direct_running_mode=in_memory"]
    c0, w0 = cpu_seconds(), time.perf_counter()
    counters = c4_beam.run(
        f"{tmp}/*.wet.gz",
        f"{tmp}/out",
        c4_beam.C4Options(language_detector=args.language_detector),
        beam_args,
    )
    beam_cpu, beam_wall = cpu_seconds() - c0, time.perf_counter() - w0

    ours_rate, tfds_rate = len(pages) / beam_cpu, len(pages) / tfds_cpu
    pages_per_tb = len(pages) / text_bytes * 1e12
    print(
        f"pages: {len(pages)} ({text_bytes / len(pages):.0f} bytes of text each), kept by clean_page: {kept}"
    )
    print(
        f"mesh-t5 c4 (all steps, DirectRunner, 1 worker): {ours_rate:.1f} pages/s per core "
        f"(CPU {beam_cpu:.1f} s, wall {beam_wall:.1f} s); output-train {counters.get('output-train', 0)}"
    )
    print(
        f"TFDS c4_utils.clean_page loop (cleaning only):    {tfds_rate:.1f} pages/s per core "
        f"(CPU {tfds_cpu:.2f} s, best of 3)"
    )
    print(
        f"ours c4_filters.clean_page loop (cleaning only): {len(pages) / ours_clean_cpu:.1f} pages/s per core"
    )
    print(
        f"langdetect alone (LanguageFn):                   {len(pages) / langdetect_cpu:.1f} pages/s per core"
    )
    print(f"py3langid alone (--language_detector=py3langid): {len(pages) / langid_cpu:.1f} pages/s per core")
    print(
        f"ratio (ours / TFDS clean_page): whole job {ours_rate / tfds_rate:.3f}, "
        f"cleaning alone {tfds_cpu / ours_clean_cpu:.3f}"
    )
    print(
        f"implied CPU-hours per TB of WET text: ours {pages_per_tb / ours_rate / 3600:.0f}, "
        f"clean_page alone {pages_per_tb / tfds_rate / 3600:.0f} (dolma reports ~122 for a C4-like pipeline)"
    )
    print(f"load average: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores", file=sys.stderr)
    shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
