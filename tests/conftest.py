import os
import subprocess
import sys

import numpy as np
import pytest

import minigrad as mg


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def write_corpus(path, n_words):
    """A small synthetic text at path (n_words seeded draws from 9 words); returns the path as a str."""
    words = ["the ", "cat ", "sat ", "on ", "a ", "mat ", "and ", "dog ", "ran\n"]
    path.write_text("".join(np.random.default_rng(0).choice(words, n_words)))
    return str(path)


@pytest.fixture
def make_corpus(tmp_path):
    """make_corpus(n_words) -> the path of write_corpus's text, in the test's folder."""
    return lambda n_words: write_corpus(tmp_path / "corpus.txt", n_words)


@pytest.fixture(scope="module")
def module_corpus(tmp_path_factory):
    """The path of write_corpus's text of 6,000 words, made once per test module."""
    return write_corpus(tmp_path_factory.mktemp("corpus") / "corpus.txt", 6000)


@pytest.fixture
def kernel_backend(request):
    """Runs the test with the CPU kernels forced to request.param ('numpy' or 'cpp'), then restores the choice."""
    name = request.param
    info = mg.backend_info()
    if name == "cpp" and not info["extension_built"]:
        pytest.skip(f"the C++ kernels are unavailable: {info['extension_reason']}")
    mg.set_backend(name)
    yield name
    mg.set_backend(info["requested_backend"])


HOLD_THE_LOCK = """import sys, time
sys.path.insert(0, sys.argv[1])
import train_char
with train_char.lock_out_dir(sys.argv[2]):
    print("holding", flush=True)
    time.sleep(300)
"""


@pytest.fixture
def hold_lock():
    """hold_lock(out_dir) -> the pid of a child process holding train_char.py's lock on out_dir (as a run in
    it would) until the test ends."""
    holders = []

    def hold(out_dir):
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        holders.append(subprocess.Popen([sys.executable, "-c", HOLD_THE_LOCK, root, out_dir], stdout=subprocess.PIPE,
                                        text=True))
        assert holders[-1].stdout.readline() == "holding\n"
        return holders[-1].pid

    yield hold
    for holder in holders:
        holder.kill()
        holder.wait()
