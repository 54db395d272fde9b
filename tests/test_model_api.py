"""T5Model's public surface (DESIGN.md): generate_tokens / generate / score / vocabulary handling."""

import numpy as np
import pytest
from conftest import tiny_config, tiny_params

from mesh_t5 import inference, network
from mesh_t5.config import DecodeOptions
from mesh_t5.errors import UserError
from mesh_t5.model import T5Model
from mesh_t5.vocab import ByteVocabulary


@pytest.fixture(scope="module")
def model():
    # Byte vocabulary: 3 specials + 256 bytes + 100 extra ids = 359 ids.
    config = tiny_config(vocab_size=359)
    return T5Model(config, tiny_params(config, seed=3), vocabulary=ByteVocabulary())


def test_generate_tokens_is_greedy_argmax_of_forward(model):
    inputs = np.array([[40, 41, 42, 1, 0], [50, 1, 0, 0, 0]], np.int32)
    tokens = model.generate_tokens(inputs, max_decode_length=6)
    assert tokens.shape == (2, 6) and tokens.dtype == np.int32
    # Teacher-force the decoded prefix and check each token is the argmax of the full forward pass.
    decoder_inputs = np.concatenate([np.zeros((2, 1), np.int32), tokens[:, :-1]], axis=1)
    logits = model.logits(inputs, decoder_inputs)
    for b in range(2):
        for t in range(6):
            if t > 0 and tokens[b, t - 1] in (0, 1):  # after EOS: PAD
                assert tokens[b, t] == 0
                continue
            assert tokens[b, t] == int(np.argmax(logits[b, t]))


def test_generate_and_score_texts(model):
    texts = ["translate English to German: That is good.", ""]
    out = model.generate(texts, max_decode_length=8)
    assert len(out) == 2 and all(isinstance(s, str) for s in out)
    vocab = model.get_vocabulary()
    ids = [[*vocab.encode(t), 1] for t in texts]
    expected, _ = inference.generate_ids(
        model.config, [model.params], ids, DecodeOptions(max_decode_length=8)
    )
    assert out == vocab.decode_batch(expected.tolist())
    scores = model.score(texts, out)
    assert scores.shape == (2,) and np.all(scores < 0)
    np.testing.assert_allclose(
        scores, inference.score(model.config, model.params, vocab, texts, out), rtol=1e-6
    )


def test_model_without_vocabulary_says_what_to_do():
    config = tiny_config()
    bare = T5Model(config, network.init_params_numpy(config, 0))
    with pytest.raises(UserError, match="has no vocabulary"):
        bare.generate(["x"])
    with pytest.raises(UserError, match="beam_size"):
        bare.generate_tokens(np.ones((1, 3), np.int32), beam_size=0)
