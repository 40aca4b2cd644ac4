"""Checkpoints as one .npz file: named arrays plus a JSON header, written atomically."""

import io
import json
import zipfile

import numpy as np

from minigrad.files import open_regular_file, write_atomically

META_KEY = "__meta_json__"


def save_checkpoint(path, arrays, meta):
    """Write arrays (name -> ndarray) and meta (a JSON-able dict) to path; the old file stays whole until
    the new one is complete (temp file, then os.replace)."""
    buffer = io.BytesIO()  # NOTE: np.savez adds ".npz" to a path without it: hand it a file object
    np.savez(buffer, **arrays, **{META_KEY: np.array(json.dumps(meta))})
    write_atomically(path, buffer.getvalue())


def load_checkpoint(path, schema=None):
    """(arrays, meta) from a file written by save_checkpoint, meta checked against schema (see check_schema)
    when one is given. A ValueError with the reason when the file is not a regular file, is unreadable or
    does not fit; an OSError when it cannot be opened."""
    with open_regular_file(path) as f:
        try:
            if not zipfile.is_zipfile(f):  # np.load reads a .npy file too: one array, and no metadata
                raise ValueError("not a .npz archive")
            with np.load(f, allow_pickle=False) as npz:
                arrays = {name: npz[name] for name in npz.files}
            meta = json.loads(str(arrays.pop(META_KEY)))
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, json.JSONDecodeError) as e:
            raise ValueError(f"checkpoint {path} is corrupt or incomplete ({type(e).__name__}: {e})") from None
    if schema is not None:
        try:
            check_schema(meta, schema, "metadata")
        except ValueError as e:
            raise ValueError(f"checkpoint {path} is damaged: its {e}") from None
    return arrays, meta


def check_schema(value, schema, where):
    """Raise ValueError naming the first part of value (parsed JSON) that schema does not allow. A schema is a
    type (float takes an int too; neither takes a bool), None, a tuple of those (any one will do), a list
    [schema] (a list of such items), or a dict {key: schema} (an object with those keys; a key ending in "?"
    may be missing, and keys not named are allowed)."""
    if isinstance(schema, dict):
        if not isinstance(value, dict):
            raise ValueError(f"{where} is {type(value).__name__} {value!r:.40}, not an object")
        for key, item_schema in schema.items():
            name = key.removesuffix("?")
            if name in value:
                check_schema(value[name], item_schema, f"{where}.{name}")
            elif not key.endswith("?"):
                raise ValueError(f"{where} has no {name!r}")
    elif isinstance(schema, list):
        if not isinstance(value, list):
            raise ValueError(f"{where} is {type(value).__name__} {value!r:.40}, not a list")
        for i, item in enumerate(value):
            check_schema(item, schema[0], f"{where}[{i}]")
    else:
        kinds = schema if isinstance(schema, tuple) else (schema,)
        if not any(_is_kind(value, kind) for kind in kinds):
            names = " or ".join("null" if kind is None else kind.__name__ for kind in kinds)
            raise ValueError(f"{where} is {type(value).__name__} {value!r:.40}, not {names}")


def _is_kind(value, kind):
    """Whether a JSON value is of one kind of check_schema's (a type, or None)."""
    if kind is None:
        return value is None
    if isinstance(value, bool):  # NOTE: True is an int to Python, never a count or a rate to us
        return kind is bool
    return isinstance(value, (int, float) if kind is float else kind)
