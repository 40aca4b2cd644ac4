"""Checkpoints as one .npz file: named arrays plus a JSON header, written atomically."""

import io
import json
import zipfile

import numpy as np

from minigrad.files import write_atomically

META_KEY = "__meta_json__"


def save_checkpoint(path, arrays, meta):
    """Write arrays (name -> ndarray) and meta (a JSON-able dict) to path; the old file stays whole until
    the new one is complete (temp file, then os.replace)."""
    buffer = io.BytesIO()  # NOTE: np.savez adds ".npz" to a path without it: hand it a file object
    np.savez(buffer, **arrays, **{META_KEY: np.array(json.dumps(meta))})
    write_atomically(path, buffer.getvalue())


def load_checkpoint(path):
    """(arrays, meta) from a file written by save_checkpoint; ValueError with the reason when it is unreadable."""
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {name: f[name] for name in f.files}
        meta = json.loads(str(arrays.pop(META_KEY)))
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, json.JSONDecodeError) as e:
        raise ValueError(f"checkpoint {path} is corrupt or incomplete ({type(e).__name__}: {e})") from None
    return arrays, meta
