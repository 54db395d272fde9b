"""C4's cleaning rules: each rule on a page built to trip it, with the TFDS counter it increments."""

import collections

from mesh_t5.data import c4_filters as c4

GOOD = "This line is a fine sentence."


def clean(text, **kw):
    counters = collections.Counter()
    kw.setdefault("min_num_sentences", 1)
    return c4.clean_page(text, counters=counters, **kw), counters


def test_keeps_only_lines_ending_in_terminal_marks():
    page = "\n".join(
        [
            GOOD,
            "A heading without a mark",
            'And then he said "it works."',
            "Is this a real question?",
            "Wait for it, wait for it...",
        ]
    )
    out, counters = clean(page)
    assert out == "\n".join([GOOD, 'And then he said "it works."', "Is this a real question?"])
    assert counters["lines-no-endmark"] == 2  # the heading and the ellipsis
    assert counters["lines-valid"] == 3


def test_min_words_per_line_is_five_by_default():
    out, counters = clean("Four words are here.\nFive words are here now.\n  Strip the spaces here too.  ")
    assert out == "Five words are here now.\nStrip the spaces here too."
    assert counters["lines-too-short"] == 1
    out, _ = clean("Three words here.\nFour words are here.", min_words_per_line=4)
    assert out == "Four words are here."


def test_page_dropped_with_too_few_sentences_after_cleaning():
    page = "One sentence is here. Two sentences are here.\nThree sentences in all here.\nno end mark here"
    assert c4.clean_page(page) is not None  # 3 sentences: the default minimum
    out, counters = clean(page, min_num_sentences=4)
    assert out is None and counters["filtered-page-toofewsentences"] == 1
    assert c4.clean_page(page.replace("Two sentences are here.", "")) is None
    # The paper's values and TFDS c4_utils' (_MIN_WORDS_PER_LINE = 5, _MIN_NUM_SENTENCES = 3).
    assert c4.MIN_NUM_SENTENCES == 3 and c4.MIN_WORDS_PER_LINE == 5


def test_javascript_and_policy_lines_dropped_page_kept():
    page = "\n".join(
        [
            GOOD,
            "Please enable JavaScript to view this page.",
            "Please read our Privacy Policy today.",
            GOOD + " Yes.",
        ]
    )
    out, counters = clean(page)
    assert out == GOOD + "\n" + GOOD + " Yes."
    assert counters["lines-javascript"] == 1 and counters["lines-policy"] == 1


def test_lorem_ipsum_curly_bracket_and_badwords_drop_the_whole_page():
    assert clean(GOOD + "\nLorem ipsum dolor sit amet.")[0] is None
    out, counters = clean(GOOD + "\nThe code is var x = {a: 1}.")
    assert out is None and counters["filtered-page-squigglybracket"] == 1
    # A curly bracket on a line already dropped for another reason does not drop the page (C4's order).
    assert clean(GOOD + "\n{ not a sentence")[0] == GOOD
    regex = c4.compile_badwords(["darn"])
    assert clean("Well darn it all, friend.\n" + GOOD, badwords_regex=regex)[0] is None
    assert clean("Darn, that went well today.\n" + GOOD, badwords_regex=regex)[0] is None  # at the start too
    assert clean("The darnest thing ever seen.\n" + GOOD, badwords_regex=regex)[0] is not None  # whole words
    assert c4.compile_badwords([]) is None


def test_citations_removed_and_too_long_words_drop_the_line():
    out, _ = clean("The sky is blue.[1] It is [edit] widely known.[citation needed]")
    assert out == "The sky is blue. It is  widely known."
    out, counters = clean(GOOD + "\nA " + "x" * 1001 + " word here.")
    assert out == GOOD and counters["lines-with-too-long-word"] == 1


def test_split_sentences():
    text = 'Return the value, e.g. the first one. It is 3.5 times bigger! Really? "Yes." Then J. Smith left.'
    assert c4.split_sentences(text) == [
        "Return the value, e.g. the first one.",
        "It is 3.5 times bigger!",
        "Really?",
        '"Yes."',
        "Then J. Smith left.",
    ]
    assert c4.split_sentences("See os.path.join() for more. then lower case.") == [
        "See os.path.join() for more. then lower case."
    ]


def test_dedupe_lines_keeps_first_copy_case_insensitively():
    pages = [
        "Line one is here.\nShared line is here.",
        "SHARED LINE IS HERE.\nOther line is here.",
        "shared line is here.",
    ]
    counters = collections.Counter()
    out = c4.dedupe_lines(pages, min_num_sentences=1, counters=counters)
    assert out == ["Line one is here.\nShared line is here.", "Other line is here.", None]
    assert counters["filtered-lines-global_duplicate"] == 2
    assert counters["filtered-deduped_page-empty"] == 1
    # A page falling under the sentence minimum after dedupe is dropped.
    assert c4.dedupe_lines(pages, min_num_sentences=2) == [
        "Line one is here.\nShared line is here.",
        None,
        None,
    ]


def test_dedupe_three_sentence_spans():
    a, b, c, d, e = (f"Sentence {w} is here." for w in "ABCDE")
    pages = [f"{a} {b} {c} {d}", f"{e} {b} {c} {d}\n{e}", f"{b} {c}\n{e} {a}"]
    counters = collections.Counter()
    out = c4.dedupe_sentence_spans(pages, min_num_sentences=1, counters=counters)
    # Page 2 repeats the span B C D: those three go, E stays (twice: no 3-span repeats).
    # Page 3 has B C E A: no window of three was seen before, so it is kept whole.
    assert out == [pages[0], f"{e}\n{e}", pages[2]]
    assert counters["filtered-sentences-span_duplicate"] == 3
    assert c4.dedupe_sentence_spans([f"{a} {b} {c}", f"{a} {b} {c}"], min_num_sentences=1) == [
        f"{a} {b} {c}",
        None,
    ]
