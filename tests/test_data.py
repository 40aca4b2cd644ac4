"""The tokenizer, the corpus reader, the split and get_batch."""

import os

import numpy as np
import pytest

from minigrad.data import CharTokenizer, get_batch, read_corpus, train_val_split

CORPUS = os.path.join(os.path.dirname(__file__), "..", "data", "tinyshakespeare.txt")


def test_tokenizer_round_trip_and_dict():
    text = "hello, world!\nzebra"
    tok = CharTokenizer(text)
    assert tok.chars == "".join(sorted(set(text))) and tok.vocab_size == len(set(text))
    ids = tok.encode(text)
    assert ids.dtype == np.int64 and tok.decode(ids) == text
    assert CharTokenizer.from_dict(tok.to_dict()).encode("low") .tolist() == tok.encode("low").tolist()
    with pytest.raises(ValueError, match="'Q' is not in the vocabulary"):
        tok.encode("Q")


def test_get_batch_shapes_shift_and_offsets_cover_the_range():
    data = np.arange(50, dtype=np.int64)
    rng = np.random.default_rng(0)
    starts = set()
    for _ in range(200):
        x, y = get_batch(data, 8, 10, rng)
        assert x.shape == y.shape == (8, 10)
        assert np.array_equal(y, x + 1)  # y is x shifted by one
        assert np.all(np.diff(x, axis=1) == 1)  # contiguous windows
        starts.update(x[:, 0].tolist())
    assert starts == set(range(50 - 10 - 1))  # [0, len - T - 1): the last start is len - T - 2


def test_get_batch_too_short():
    with pytest.raises(ValueError, match="too few"):
        get_batch(np.arange(11), 2, 10, np.random.default_rng(0))


def test_split_is_contiguous_ninety_ten():
    ids = np.arange(1000)
    train, val = train_val_split(ids)
    assert len(train) == 900 and len(val) == 100 and train[-1] + 1 == val[0]


@pytest.mark.skipif(not os.path.exists(CORPUS), reason="tiny-shakespeare not in data/ (CI copies it there)")
def test_tiny_shakespeare_split_sizes():
    text = read_corpus(CORPUS)
    tok = CharTokenizer(text)
    assert len(text) == 1_115_394 and tok.vocab_size == 65
    train, val = train_val_split(tok.encode(text))
    assert (len(train), len(val)) == (1_003_854, 111_540)


def test_read_corpus_errors(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        read_corpus(str(tmp_path / "nope.txt"))
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(ValueError, match="is empty"):
        read_corpus(str(tmp_path / "empty.txt"))
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(ValueError, match="not UTF-8"):
        read_corpus(str(tmp_path / "latin1.txt"))
