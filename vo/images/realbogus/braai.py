"""The braai real/bogus network (Duev et al. 2019, ZTF's ``drb`` score) run in plain numpy.

braai ``d6_m7`` is a small VGG-like CNN (Keras, channels_last): input (63, 63, 3) stacks of the
science, reference and difference cutouts; conv 3x3 x16 (relu, valid) -> conv 3x3 x16 -> max-pool
2x2 -> conv 3x3 x32 -> conv 3x3 x32 -> max-pool 4x4 -> flatten (6*6*32) -> dense 256 (relu) ->
dense 1 (sigmoid); dropout layers are the identity at inference.  The layer list, paddings,
strides, pool sizes and activations are read from the Keras architecture JSON and the weights
from the Keras HDF5 weights file with h5py, so any Sequential model of these layer types runs.

Why hand-written (and not TensorFlow/Keras/onnxruntime): a 5-layer inference is ~60 lines of
numpy; a deep-learning framework would be a ~500 MB dependency for it.

Preprocessing (braai's ``make_triplet``): NaNs -> 0, then each channel is L2-normalised; for
models up to ``d6_m7`` braai normalises with ``tf.keras.utils.normalize`` (axis -1, i.e. each
ROW of the 63x63 stamp divided by its own L2 norm; zero rows left as they are), later models
divide the whole stamp by its L2 norm.  Stamps smaller than 63x63 are padded at the end of each
axis with 1e-9 after normalisation, as braai does; larger ones are cropped about their centre.

The model files (MIT, Copyright (c) 2019 Dmitry Duev) ship in ``vo/data/braai/``.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
from astropy.io import fits

#: folder of the shipped braai model files
MODEL_DIR = Path(__file__).resolve().parents[2] / "data" / "braai"
STAMP = 63  # braai input size (pix)
NORMALIZATIONS = ("rows", "global")
BATCH = 128  # stamps per forward batch (bounds the temporary memory to ~100 MB)


class BraaiError(ValueError):
    """The model files cannot be read or describe an unsupported network; names the file."""


# --------------------------------------------------------------------------- layers


def _activation(name: str, where: str):
    funcs = {
        "linear": lambda x: x,
        "relu": lambda x: np.maximum(x, 0, out=x),
        "sigmoid": lambda x: 0.5 * (1 + np.tanh(0.5 * x)),  # overflow-free logistic
    }
    if name not in funcs:
        raise BraaiError(f"{where}: unsupported activation {name!r}")
    return funcs[name]


def _pad_same(x: np.ndarray, k: tuple[int, int], s: tuple[int, int]) -> np.ndarray:
    """Zero-pad (N, H, W, C) as Keras/TensorFlow 'same' padding does (extra pixel at the end)."""
    pads = []
    for n, kk, ss in zip(x.shape[1:3], k, s):
        out = -(-n // ss)
        total = max((out - 1) * ss + kk - n, 0)
        pads.append((total // 2, total - total // 2))
    return np.pad(x, [(0, 0), *pads, (0, 0)])


def conv2d(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray, strides=(1, 1),
           padding: str = "valid") -> np.ndarray:
    """2-D cross-correlation as Keras Conv2D (channels_last).

    Parameters
    ----------
    x : (N, H, W, Cin) float32
    kernel : (kh, kw, Cin, Cout) float32 (Keras layout)
    bias : (Cout,)
    strides, padding : as in Keras ("valid" or "same").

    Returns (N, Ho, Wo, Cout) float32. Computed as a sum over the kh*kw kernel taps of
    (N*Ho*Wo, Cin) @ (Cin, Cout) matrix products: no im2col copy of kh*kw times the input.
    """
    kh, kw = kernel.shape[:2]
    sh, sw = strides
    if padding == "same":
        x = _pad_same(x, (kh, kw), (sh, sw))
    n, h, w, _ = x.shape
    ho, wo = (h - kh) // sh + 1, (w - kw) // sw + 1
    out = np.broadcast_to(bias.astype(np.float32), (n, ho, wo, kernel.shape[3])).copy()
    for i in range(kh):
        for j in range(kw):
            patch = x[:, i:i + sh * (ho - 1) + 1:sh, j:j + sw * (wo - 1) + 1:sw, :]
            out += patch @ kernel[i, j]
    return out


def max_pool(x: np.ndarray, pool=(2, 2), strides=None, padding: str = "valid") -> np.ndarray:
    """Max-pooling of (N, H, W, C) with pool == strides and 'valid' padding (as braai uses)."""
    strides = tuple(pool) if strides is None else tuple(strides)
    if tuple(strides) != tuple(pool) or padding != "valid":
        raise BraaiError(f"max-pooling with pool {pool}, strides {strides}, padding {padding!r} "
                         "is not supported (only strides == pool, 'valid')")
    n, h, w, c = x.shape
    ph, pw = pool
    ho, wo = h // ph, w // pw
    return x[:, :ho * ph, :wo * pw].reshape(n, ho, ph, wo, pw, c).max(axis=(2, 4))


# --------------------------------------------------------------------------- model


@dataclass
class Layer:
    """One inference step: ``kind`` in conv, pool, flatten, dense (dropout is dropped)."""

    kind: str
    name: str
    config: dict
    weights: tuple[np.ndarray, ...] = ()


@dataclass
class BraaiModel:
    """A Keras Sequential CNN (braai) ready for numpy inference."""

    name: str
    input_shape: tuple[int, int, int]
    layers: list[Layer]

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Network output for a batch ``x`` (N, 63, 63, 3) float32 -> (N,) float."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        for layer in self.layers:
            c = layer.config
            if layer.kind == "conv":
                x = conv2d(x, *layer.weights, tuple(c["strides"]), c["padding"])
                x = _activation(c["activation"], layer.name)(x)
            elif layer.kind == "pool":
                x = max_pool(x, tuple(c["pool_size"]), c.get("strides"), c["padding"])
            elif layer.kind == "flatten":
                x = x.reshape(x.shape[0], -1)  # channels_last, C order: as Keras Flatten
            elif layer.kind == "dense":
                x = x @ layer.weights[0] + layer.weights[1]
                x = _activation(c["activation"], layer.name)(x)
        return x.reshape(x.shape[0], -1)[:, 0]

    def predict(self, triplets: np.ndarray, batch: int = BATCH) -> np.ndarray:
        """Scores in [0, 1] of preprocessed triplets (N, 63, 63, 3) (see :func:`make_triplets`)."""
        triplets = np.asarray(triplets)
        if triplets.ndim != 4 or triplets.shape[1:] != self.input_shape:
            raise ValueError(f"braai {self.name}: input shape {triplets.shape}, expected "
                             f"(N, {', '.join(map(str, self.input_shape))})")
        out = np.empty(len(triplets), np.float64)
        for lo in range(0, len(triplets), batch):
            out[lo:lo + batch] = self.forward(triplets[lo:lo + batch])
        return out


_KINDS = {"Conv2D": "conv", "MaxPooling2D": "pool", "Flatten": "flatten", "Dense": "dense",
          "Dropout": None, "InputLayer": None}


def load_braai(directory: str | os.PathLike | None = None, name: str = "d6_m7") -> BraaiModel:
    """Load ``{name}.architecture.json`` and ``{name}.weights.h5`` (Keras 2 HDF5) from ``directory``.

    ``directory`` defaults to the shipped :data:`MODEL_DIR`. Raises :class:`BraaiError` naming
    the file for a missing/unreadable file, an unsupported layer, or weights that do not fit.
    """
    directory = Path(directory) if directory is not None else MODEL_DIR
    arch_path = directory / f"{name}.architecture.json"
    weights_path = directory / f"{name}.weights.h5"
    try:
        arch = json.loads(arch_path.read_text())
        specs = arch["config"]["layers"] if isinstance(arch["config"], dict) else arch["config"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BraaiError(f"{arch_path}: cannot read the Keras architecture: {exc}") from exc
    input_shape = None
    layers = []
    try:
        with h5py.File(weights_path, "r") as f:
            group = f["model_weights"] if "model_weights" in f else f
            for spec in specs:
                cls, cfg = spec["class_name"], spec["config"]
                if "batch_input_shape" in cfg and input_shape is None:
                    input_shape = tuple(cfg["batch_input_shape"][1:])
                if cls not in _KINDS:
                    raise BraaiError(f"{arch_path}: unsupported layer {cls} ({cfg.get('name')})")
                kind = _KINDS[cls]
                if kind is None:
                    continue
                if cfg.get("data_format", "channels_last") != "channels_last":
                    raise BraaiError(f"{arch_path}: layer {cfg['name']}: only channels_last is supported")
                if kind == "conv" and tuple(cfg.get("dilation_rate", (1, 1))) != (1, 1):
                    raise BraaiError(f"{arch_path}: layer {cfg['name']}: dilation is not supported")
                weights = ()
                if kind in ("conv", "dense"):
                    g = group[cfg["name"]]
                    names = [n.decode() if isinstance(n, bytes) else n for n in g.attrs["weight_names"]]
                    arrays = {n.split("/")[-1].split(":")[0]: np.asarray(g[n], np.float32) for n in names}
                    bias = arrays.get("bias")
                    if bias is None:  # use_bias false
                        bias = np.zeros(arrays["kernel"].shape[-1], np.float32)
                    weights = (arrays["kernel"], bias)
                layers.append(Layer(kind, cfg["name"], cfg, weights))
    except BraaiError:
        raise
    except (OSError, KeyError) as exc:
        raise BraaiError(f"{weights_path}: cannot read the Keras weights: {exc}") from exc
    if input_shape is None:
        raise BraaiError(f"{arch_path}: no batch_input_shape in the first layer")
    model = BraaiModel(name=name, input_shape=input_shape, layers=layers)
    try:  # shape check: a wrong kernel size or dense width fails here, not at scoring time
        model.forward(np.zeros((1, *input_shape), np.float32))
    except ValueError as exc:
        raise BraaiError(f"{weights_path}: weights do not fit {arch_path}: {exc}") from exc
    return model


# --------------------------------------------------------------------------- preprocessing


def normalize_stamps(stamps: np.ndarray, method: str = "rows") -> np.ndarray:
    """braai's normalisation of (N, H, W) stamps after NaN -> 0.

    ``rows``: each row divided by its L2 norm (``tf.keras.utils.normalize``, braai <= d6_m7);
    ``global``: each stamp divided by its L2 norm (later braai models). Zero norms are left
    as they are (divided by 1).
    """
    if method not in NORMALIZATIONS:
        raise ValueError(f"braai normalisation {method!r}: expected one of {NORMALIZATIONS}")
    x = np.nan_to_num(np.asarray(stamps, np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    axes = (-1,) if method == "rows" else (-2, -1)
    norm = np.sqrt((x * x).sum(axis=axes, keepdims=True))
    return x / np.where(norm > 0, norm, 1.0)


def fit_to_size(stamps: np.ndarray, size: int = STAMP, fill: float = 1e-9,
                pad: str = "end") -> np.ndarray:
    """(N, H, W) stamps cropped about their centre pixel or padded with ``fill`` to size x size.

    ``pad="end"`` pads after the last row/column (braai's convention for ZTF cutouts cut short
    by a CCD edge); ``pad="centre"`` pads both sides so the centre pixel stays in the centre.
    """
    if pad not in ("end", "centre"):
        raise ValueError(f"braai: pad must be 'end' or 'centre', got {pad!r}")
    out = stamps
    for axis in (1, 2):
        n = out.shape[axis]
        if n > size:
            lo = n // 2 - size // 2
            out = np.take(out, np.arange(lo, lo + size), axis=axis)
        elif n < size:
            widths = [(0, 0)] * 3
            extra = size - n
            widths[axis] = (0, extra) if pad == "end" else (extra // 2, extra - extra // 2)
            out = np.pad(out, widths, constant_values=fill)
    return out


def _prepare(stamps, normalization: str, pad: str) -> np.ndarray:
    """Normalised, size-fitted (N, 63, 63) stack of one channel: an (N, H, W) or (H, W) array,
    or a sequence of 2-D stamps of different shapes (ZTF cutouts cut short at a CCD edge)."""
    if isinstance(stamps, np.ndarray):
        s = stamps[None] if stamps.ndim == 2 else stamps
        if s.ndim != 3:
            raise ValueError(f"braai: stamps must be (N, H, W), got shape {s.shape}")
        return fit_to_size(normalize_stamps(s, normalization), pad=pad)
    parts = [_prepare(np.asarray(st, np.float64), normalization, pad) for st in stamps]
    return np.concatenate(parts) if parts else np.empty((0, STAMP, STAMP))


def make_triplets(sci: np.ndarray, ref: np.ndarray, diff: np.ndarray,
                  normalization: str = "rows", pad: str = "end") -> np.ndarray:
    """braai input (N, 63, 63, 3) float32 from science, reference and difference stamps.

    Each input is (N, H, W), (H, W) or a list of 2-D stamps, in any flux unit (the normalisation
    removes the scale); ``pad`` as in :func:`fit_to_size`.
    """
    chans = [_prepare(stamps, normalization, pad) for stamps in (sci, ref, diff)]
    if len({c.shape for c in chans}) != 1:
        raise ValueError(f"braai: sci/ref/diff stamp counts differ: {[c.shape for c in chans]}")
    return np.stack(chans, axis=-1).astype(np.float32)


def decode_cutout(stamp_data: bytes, where: str = "cutout") -> np.ndarray:
    """2-D float array of a ZTF alert cutout (gzipped FITS bytes, ``stampData``)."""
    try:
        raw = gzip.decompress(stamp_data) if stamp_data[:2] == b"\x1f\x8b" else stamp_data
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", fits.verify.VerifyWarning)  # ZTF's SIMPLE card
            hdul = fits.open(io.BytesIO(raw))
        with hdul:
            data = hdul[0].data
            if data is None or data.ndim != 2:
                raise ValueError(f"no 2-D image in the primary HDU (shape {getattr(data, 'shape', None)})")
            return np.asarray(data, np.float64)
    except (OSError, EOFError, ValueError, TypeError) as exc:
        raise ValueError(f"{where}: cannot decode the cutout: {exc}") from exc


def score_triplets(sci, ref, diff, model: BraaiModel | None = None,
                   normalization: str = "rows", pad: str = "end") -> np.ndarray:
    """braai scores in [0, 1] of (N, H, W) science/reference/difference stamps."""
    model = load_braai() if model is None else model
    return model.predict(make_triplets(sci, ref, diff, normalization, pad))
