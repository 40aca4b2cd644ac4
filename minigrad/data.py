"""minigrad.data: the character tokenizer, the corpus (read or downloaded), the split and get_batch."""

import os
import urllib.error
import urllib.request

import numpy as np

from minigrad.files import open_regular_file, write_atomically

TINY_SHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
TINY_SHAKESPEARE_BYTES = 1_115_394  # all ASCII: as many bytes as characters


class CharTokenizer:
    """One id per distinct character, in sorted order: encode(str) -> int64 ids, decode(ids) -> str."""

    def __init__(self, chars):
        self.chars = "".join(sorted(set(chars)))
        self.stoi = {c: i for i, c in enumerate(self.chars)}

    @property
    def vocab_size(self):
        return len(self.chars)

    def encode(self, text):
        try:
            return np.fromiter((self.stoi[c] for c in text), dtype=np.int64, count=len(text))
        except KeyError as e:
            raise ValueError(f"encode: character {e.args[0]!r} is not in the vocabulary") from None

    def decode(self, ids):
        return "".join(self.chars[int(i)] for i in ids)

    def to_dict(self):
        return {"chars": self.chars}

    @classmethod
    def from_dict(cls, d):
        return cls(d["chars"])


def read_corpus(path, min_chars=1):
    """The text of a UTF-8 file, with a one-line ValueError when it is missing, not a regular file, not UTF-8 or
    too short."""
    if not os.path.exists(path):
        raise ValueError(f"corpus {path} does not exist; pass --data PATH to a UTF-8 text file")
    try:
        with open_regular_file(path) as f:
            raw = f.read()
    except ValueError as e:  # a folder, a FIFO, a device
        raise ValueError(f"corpus {e}; pass --data PATH to a UTF-8 text file") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"corpus {path} is not UTF-8 text (byte {e.start}); convert it or pass another --data") from None
    if len(text) < min_chars:
        what = "empty" if not text else f"too short ({len(text)} characters)"
        raise ValueError(f"corpus {path} is {what}: it needs at least {min_chars} characters (block_size + 2)")
    return text


def download_tiny_shakespeare(path, url=TINY_SHAKESPEARE_URL, timeout=30):
    """Fetch tiny-shakespeare to path (atomically: a temp file, checked, then renamed into place)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            raw = response.read()
    except (urllib.error.URLError, OSError) as e:
        raise ValueError(
            f"{path} is missing and the download from {url} failed ({e}); "
            f"put tinyshakespeare.txt at {path} or pass --data PATH"
        ) from None
    if len(raw) != TINY_SHAKESPEARE_BYTES:
        raise ValueError(f"downloaded {len(raw)} bytes from {url}, expected {TINY_SHAKESPEARE_BYTES}; not saved")
    write_atomically(path, raw)


def train_val_split(ids, train_fraction=0.9):
    """The first 90% of the ids for training, the rest for validation (contiguous, no shuffling)."""
    n = int(train_fraction * len(ids))
    return ids[:n], ids[n:]


def get_batch(data, batch_size, block_size, rng):
    """B random windows of the 1-D ids: x = data[i : i+T], y = data[i+1 : i+T+1], offsets i uniform in
    [0, len - T - 1). Returns x, y int64 arrays of shape (B, T)."""
    high = len(data) - block_size - 1
    if high < 1:
        raise ValueError(f"get_batch: {len(data)} ids are too few for block_size {block_size}")
    offsets = rng.integers(0, high, size=batch_size)  # (B,)
    rows = offsets[:, None] + np.arange(block_size)  # (B, T)
    return data[rows], data[rows + 1]
