import random

import pytest

from mesh_t5.errors import UserError
from mesh_t5.vocab import ByteVocabulary, SentencePieceVocabulary

WORDS = [
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "a",
    "lazy",
    "dog",
    "thank",
    "you",
    "for",
    "inviting",
    "me",
    "to",
    "your",
    "party",
    "last",
    "week",
]


@pytest.fixture(scope="module")
def sp_vocab(tmp_path_factory):
    rnd = random.Random(0)
    corpus = tmp_path_factory.mktemp("sp") / "corpus.txt"
    corpus.write_text("\n".join(" ".join(rnd.choice(WORDS) for _ in range(12)) for _ in range(400)) + "\n")
    path = corpus.parent / "spiece.model"
    return SentencePieceVocabulary.train(str(corpus), vocab_size=48, model_path=str(path)), path


def test_sentencepiece_special_ids_and_sizes(sp_vocab):
    vocab, path = sp_vocab
    assert (vocab.pad_id, vocab.eos_id, vocab.unk_id) == (0, 1, 2)
    assert vocab.vocab_size == 48 + 100 and vocab.extra_ids == 100
    assert vocab.extra_id(0) == vocab.vocab_size - 1 and vocab.extra_id(99) == 48
    # T5's settings are in the trained proto: pad=0, eos=1, unk=2, no bos.
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(path))
    assert (sp.pad_id(), sp.eos_id(), sp.unk_id(), sp.bos_id()) == (0, 1, 2, -1)
    assert sp.get_piece_size() == 48


def test_sentencepiece_round_trip_sentinels_eos_pad(sp_vocab):
    vocab, path = sp_vocab
    text = "thank you for inviting me"
    ids = vocab.encode(text)
    assert vocab.decode(ids) == text
    assert vocab.decode([*ids, 1, *vocab.encode("lazy dog")]) == text  # stops at EOS
    assert vocab.decode([0, *ids, 0, 0]) == text  # PAD dropped
    with_sentinel = vocab.encode("thank you <extra_id_0> me <extra_id_1>")
    assert vocab.vocab_size - 1 in with_sentinel and vocab.vocab_size - 2 in with_sentinel
    assert vocab.decode(with_sentinel).replace(" ", "") == "thankyou<extra_id_0>me<extra_id_1>"
    assert vocab.encode_batch([text, "lazy dog"]) == [ids, vocab.encode("lazy dog")]
    assert vocab.decode_batch([[*ids, 1, 5], ids]) == [text, text]
    # Ids past the vocabulary (a model's padded embedding rows, 32128 > 32100 in T5) decode as UNK.
    assert vocab.decode([*ids, vocab.vocab_size + 3]) == vocab.decode([*ids, 2]) != text
    # The serialized proto tokenizes the sentinels to the same ids (what a TF-text graph would use).
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_proto=vocab.sp_model_bytes)
    assert sp.get_piece_size() == vocab.vocab_size
    assert list(sp.encode("thank you <extra_id_0> me")) == vocab.encode("thank you <extra_id_0> me")
    # Loading the written file gives the same vocabulary.
    assert SentencePieceVocabulary(str(path)) == vocab


def test_byte_vocabulary_layout():
    v = ByteVocabulary()
    assert v.vocab_size == 3 + 256 + 100
    assert v.encode("a") == [ord("a") + 3]
    assert v.encode("é") == [0xC3 + 3, 0xA9 + 3]
    assert v.extra_id(0) == 358 and v.encode("<extra_id_0>") == [358]
    assert v.decode([*v.encode("héllo"), 1, 50]) == "héllo"
    assert v.decode([0, *v.encode("x"), 358, 0]) == "x<extra_id_0>"
    assert ByteVocabulary(extra_ids=125).vocab_size == 384  # ByT5's size


def test_vocabulary_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        SentencePieceVocabulary(str(tmp_path / "missing.model"))
    bad = tmp_path / "bad.model"
    bad.write_bytes(b"\xff\x00garbage")
    with pytest.raises(UserError, match="not a SentencePiece model"):
        SentencePieceVocabulary(str(bad))
    with pytest.raises(UserError, match="empty corpus"):
        SentencePieceVocabulary.train([], vocab_size=10)
    with pytest.raises(UserError, match="extra ids"):
        ByteVocabulary(extra_ids=2).extra_id(5)
