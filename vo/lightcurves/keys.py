"""Keys of datasets in HDF5 files: one to one with source names (no two names share a group),
and the ``filekey`` attribute of the datasets (:class:`key_property`)."""

from __future__ import annotations

import functools
import re

_KEY_SAFE = re.compile(r"[A-Za-z0-9_.+\-]")
_KEY_ESCAPE = re.compile(rb"~([0-9A-F]{2})")


@functools.lru_cache(maxsize=1 << 16)  # light-curve keys ask for each source's key many times
def sanitize_key(name: str) -> str:
    """HDF5- and file-name-safe key of a source name, one to one (:func:`unsanitize_key` reverses it).

    Letters, digits and ``_ . + -`` stay; every other byte of the UTF-8 name (``/``, spaces,
    ``~`` itself) becomes ``~XX`` (hex), and so do the dots of a name that is only dots.  Why
    not ``_`` for every unsafe character, as before: ``a/b`` and ``a_b`` then shared one group,
    and one source got another's photometry without an error.  Surrounding spaces are not part
    of a name (stripped).
    """
    text = str(name).strip()
    if not text:
        raise ValueError(f"source name {name!r} gives an empty key")
    if set(text) == {"."}:
        return "~2E" * len(text)
    return "".join(ch if _KEY_SAFE.fullmatch(ch) else "".join(f"~{b:02X}" for b in ch.encode("utf-8"))
                   for ch in text)


def unsanitize_key(key: str) -> str:
    """The source name of a key made by :func:`sanitize_key`."""
    return _KEY_ESCAPE.sub(lambda m: bytes([int(m[1], 16)]), key.encode("utf-8")).decode("utf-8")


class key_property:  # noqa: N801 (a decorator, like property)
    """``filekey``: on an instance, the dataset's key (given, or derived from its attributes);
    on the class, the class's ``_filekey``: the table column once :mod:`vo.db` has mapped the
    class, so ``sa.select(Lightcurve.filekey)`` is SQL."""

    def __init__(self, fget):
        self.fget = fget
        self.__doc__ = fget.__doc__

    def __get__(self, obj, owner=None):
        if obj is None:
            column = owner.__dict__.get("_filekey")
            return column if column is not None else self
        return self.fget(obj)
