"""JSON encoding of numpy values, for ``json.dumps(default=...)`` everywhere we write JSON (HDF5
attributes, database JSON columns)."""

from __future__ import annotations

import numpy as np


def numpy_to_json(obj):
    """A numpy scalar as its Python value, an array as a list; TypeError for anything else."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable: {obj!r}")


def numpy_or_str_to_json(obj):
    """As :func:`numpy_to_json`, with anything else written as ``str(obj)``."""
    try:
        return numpy_to_json(obj)
    except TypeError:
        return str(obj)
