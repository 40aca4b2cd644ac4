import numpy as np
import pytest

import minigrad as mg


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture
def make_corpus(tmp_path):
    """make_corpus(n_words) -> the path of a small synthetic text (n_words seeded draws from 9 words)."""

    def make(n_words):
        words = ["the ", "cat ", "sat ", "on ", "a ", "mat ", "and ", "dog ", "ran\n"]
        path = tmp_path / "corpus.txt"
        path.write_text("".join(np.random.default_rng(0).choice(words, n_words)))
        return str(path)

    return make


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
