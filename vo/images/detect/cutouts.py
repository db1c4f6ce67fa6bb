"""New, reference and difference stamps around each candidate (cutouts step).

Stamps are ``size`` x ``size`` pixels (odd) centred on the pixel nearest the candidate's
position (the same convention as :func:`vo.images.extract.psf.stamp_grid`, so a PSF rendered at the
candidate's position lines up with the stamp). Pixels off the CCD are NaN in the images, 0 in
the weights and flagged ``EDGE | NAN``; a candidate whose stamp leaves the CCD has
``off_edge = True``. All candidates are cut at once with fancy indexing (arrays (n, size, size)).

File (:func:`write_cutouts`): one HDF5 file with datasets ``new``, ``ref``, ``sub`` (float32,
e- of each image; ``sub`` in e- of the new image), ``new_weight``, ``ref_weight``,
``sub_weight`` (float32, 1/e-^2), ``new_flags``, ``ref_flags``, ``sub_flags`` (uint16, bits of
:mod:`vo.images.flags`), the candidate table as group ``candidates`` (:func:`vo.io.hdf5.write_table`)
and the provenance attributes on the root.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
from astropy.table import Table

from vo.images import flags as pixflags
from vo.images.extract.psf import cut_stamps, stamp_grid
from vo.io.atomic import atomic_path
from vo.io.hdf5 import read_attrs, read_columns, write_attrs, write_table


IMAGES = ("new", "ref", "sub")
STAMPS = tuple(f"{k}{s}" for k in IMAGES for s in ("", "_weight", "_flags"))
OFF_CCD = pixflags.EDGE | pixflags.NAN  # flags of the padding pixels off the CCD


class CutoutsError(ValueError):
    """Cutouts that cannot be made or read; the message names the file or the problem."""


@dataclass
class Cutouts:
    """Stamps of n candidates.

    Attributes
    ----------
    new, ref, sub : (n, size, size) float32, e- (``sub`` in e- of the new image); NaN off the CCD.
    new_weight, ref_weight, sub_weight : (n, size, size) float32 inverse variance (1/e-^2), 0 where
        unusable or off the CCD (``sub_weight`` = 1 / diff_err^2).
    new_flags, ref_flags, sub_flags : (n, size, size) uint16 pixel flags; ``EDGE | NAN`` off the CCD.
    candidates : astropy Table, the candidates in stamp order plus ``x0, y0`` (image pixel of the
        stamp centre) and ``off_edge`` (the stamp reaches beyond the CCD).
    meta : dict (size, image shape).
    """

    new: np.ndarray
    ref: np.ndarray
    sub: np.ndarray
    new_weight: np.ndarray
    ref_weight: np.ndarray
    sub_weight: np.ndarray
    new_flags: np.ndarray
    ref_flags: np.ndarray
    sub_flags: np.ndarray
    candidates: Table
    meta: dict = field(default_factory=dict)

    @property
    def size(self) -> int:
        return int(self.new.shape[-1])

    def __len__(self) -> int:
        return int(self.new.shape[0])


def _inverse_variance(err: np.ndarray) -> np.ndarray:
    """1/err^2 (float32), 0 where err is not finite and positive."""
    err = np.asarray(err, np.float32)
    ok = np.isfinite(err) & (err > 0)
    return np.where(ok, 1 / np.where(ok, err, 1) ** 2, 0).astype(np.float32)


def _layers(new, ref, diff) -> dict[str, np.ndarray]:
    """The nine 2-D arrays stamps are cut from, checked to share one shape."""
    layers = {"new": new.sci, "new_weight": new.weight, "new_flags": new.flags,
              "ref": ref.sci, "ref_weight": ref.weight, "ref_flags": ref.flags,
              "sub": diff.diff, "sub_weight": _inverse_variance(diff.diff_err), "sub_flags": diff.flags}
    shape = np.shape(layers["new"])
    bad = {k: np.shape(v) for k, v in layers.items() if np.shape(v) != shape or len(shape) != 2}
    if bad:
        raise CutoutsError(f"new, reference and difference arrays must share one 2-D shape "
                           f"(new SCI {shape}); differing: {bad}")
    return layers


def make_cutouts(candidates: Table, new, ref, diff, size: int = 41) -> Cutouts:
    """Cut new, reference and difference stamps (with weights and flags) around each candidate.

    Parameters
    ----------
    candidates : Table with ``x``, ``y`` (0-based pix on the new image's grid), e.g. from
        :func:`vo.images.detect.detect_candidates`.
    new, ref : vo.images.image.Image on the same pixel grid (the reference aligned to the new).
    diff : vo.images.subtract.Difference (``diff``, ``diff_err``, ``flags`` are used).
    size : stamp side (pix, odd).

    Stamps reaching beyond the CCD are padded (NaN, weight 0, flags ``EDGE | NAN``), never cut short.
    """
    size = int(size)
    if size < 1 or size % 2 == 0:
        raise CutoutsError(f"cutouts.size must be odd and positive, got {size}")
    for col in ("x", "y"):
        if col not in candidates.colnames:
            raise CutoutsError(f"candidate table has no column {col!r}")
    x = np.asarray(candidates["x"], np.float64)
    y = np.asarray(candidates["y"], np.float64)
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        bad = np.flatnonzero(~(np.isfinite(x) & np.isfinite(y)))
        raise CutoutsError(f"candidates {bad[:10].tolist()} have non-finite positions")
    layers = _layers(new, ref, diff)
    ix, iy, _, _ = stamp_grid(x, y, size // 2)
    out = {}
    for name, arr in layers.items():
        if name.endswith("_flags"):
            (s,), inside = cut_stamps([np.asarray(arr, pixflags.DTYPE)], ix, iy, fill=OFF_CCD)
        elif name.endswith("_weight"):
            (s,), inside = cut_stamps([np.asarray(arr, np.float32)], ix, iy, fill=0)
        else:
            (s,), inside = cut_stamps([np.asarray(arr, np.float32)], ix, iy, fill=np.nan)
        out[name] = s
    cands = Table(candidates, copy=True)
    cands["x0"] = np.rint(x).astype(np.int32)
    cands["y0"] = np.rint(y).astype(np.int32)
    cands["off_edge"] = ~inside.reshape(len(x), -1).all(axis=1) if len(x) else np.zeros(0, bool)
    return Cutouts(**out, candidates=cands, meta={"size": size, "image_shape": list(np.shape(layers["new"]))})


def write_cutouts(path: str | os.PathLike, cutouts: Cutouts, attrs: dict | None = None) -> None:
    """Write cutouts atomically to HDF5 (datasets per :data:`STAMPS`, group ``candidates``)."""
    n, size = len(cutouts), cutouts.size
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        for name in STAMPS:
            arr = getattr(cutouts, name)
            if arr.shape != (n, size, size):
                raise CutoutsError(f"{path}: {name} has shape {arr.shape}, expected {(n, size, size)}")
            f.create_dataset(name, data=arr, chunks=(1, size, size) if n else None,
                             compression="gzip" if n else None, compression_opts=1 if n else None,
                             shuffle=bool(n))
        cols = {c: np.asarray(cutouts.candidates[c]) for c in cutouts.candidates.colnames}
        write_table(f, "candidates", cols)
        write_attrs(f, {**(attrs or {}), "size": size, "n_candidates": n,
                        "image_shape": cutouts.meta.get("image_shape")})


def read_cutouts(path: str | os.PathLike) -> Cutouts:
    """Read cutouts written by :func:`write_cutouts`; :class:`CutoutsError` names the file on failure."""
    path = Path(path)
    if not path.exists():
        raise CutoutsError(f"{path}: file not found")
    try:
        with h5py.File(path, "r") as f:
            missing = [k for k in (*STAMPS, "candidates") if k not in f]
            if missing:
                raise CutoutsError(f"{path}: missing datasets {missing}")
            arrays = {k: f[k][...] for k in STAMPS}
            cols, _ = read_columns(f["candidates"])
            attrs = read_attrs(f)
    except OSError as exc:
        raise CutoutsError(f"{path}: not a readable HDF5 file ({exc})") from exc
    shapes = {k: v.shape for k, v in arrays.items()}
    if len(set(shapes.values())) != 1 or arrays["new"].ndim != 3:
        raise CutoutsError(f"{path}: stamp datasets disagree in shape: {shapes}")
    n = arrays["new"].shape[0]
    cands = Table(cols)
    if len(cands) != n and cands.colnames:
        raise CutoutsError(f"{path}: {len(cands)} candidates but {n} stamps")
    meta = {"size": int(arrays["new"].shape[-1]), "image_shape": attrs.get("image_shape"),
            "attrs": attrs}
    return Cutouts(**arrays, candidates=cands, meta=meta)
