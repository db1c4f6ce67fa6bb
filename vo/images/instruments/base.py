"""Instrument base class: sections (CCDs), header keywords and reading raw exposures.

A raw exposure is a multi-extension FITS file (``.fits``) or its fpack-compressed form
(``.fits.fz``, tile-compressed image HDUs), one HDU per section (CCD).  Geometry comes from
the standard keywords: ``DATASEC`` (data region), ``DATASEC{A,B,..}``/``BIASSEC{A,B,..}``
(per-amplifier data and overscan regions), ``GAIN{A,B}`` (e-/ADU), ``RDNOISE{A,B}`` (e-) and
``SATURATE``/``SATURAT{A,B}`` (ADU).  FITS sections are 1-based and inclusive
(``[x1:x2,y1:y2]``); :func:`parse_section` turns them into 0-based numpy slices ``(y, x)``.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.time import Time

from vo.io.fits import FitsError

#: Amplifier letters looked for in ``DATASEC{amp}``/``BIASSEC{amp}``/``GAIN{amp}``.
AMPS = ("A", "B", "C", "D")
#: Primary-header keys that describe the primary HDU itself and are not inherited.
_STRUCTURAL = {"SIMPLE", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "NAXIS3", "EXTEND", "NEXTEND",
               "PCOUNT", "GCOUNT", "XTENSION", "BSCALE", "BZERO", "CHECKSUM", "DATASUM",
               "EXTNAME", "EXTVER", "INHERIT", "COMMENT", "HISTORY", ""}
_SECTION_RE = re.compile(r"^\s*\[\s*(\d+)\s*:\s*(\d+)\s*,\s*(\d+)\s*:\s*(\d+)\s*\]\s*$")

Slices = tuple[slice, slice]


def parse_section(value: str, key: str = "section") -> Slices:
    """FITS section ``"[x1:x2,y1:y2]"`` (1-based, inclusive) -> numpy slices ``(y, x)``.

    Reversed ranges (``x1 > x2``) give the same pixels in increasing order.
    """
    m = _SECTION_RE.match(str(value))
    if not m:
        raise ValueError(f"{key}: not a FITS section '[x1:x2,y1:y2]': {value!r}")
    x1, x2, y1, y2 = (int(v) for v in m.groups())
    if min(x1, x2, y1, y2) < 1:
        raise ValueError(f"{key}: FITS sections are 1-based: {value!r}")
    return slice(min(y1, y2) - 1, max(y1, y2)), slice(min(x1, x2) - 1, max(x1, x2))


def format_section(sl: Slices) -> str:
    """numpy slices ``(y, x)`` -> FITS section ``"[x1:x2,y1:y2]"`` (inverse of :func:`parse_section`)."""
    ys, xs = sl
    return f"[{xs.start + 1}:{xs.stop},{ys.start + 1}:{ys.stop}]"


def merge_headers(primary: fits.Header, ext: fits.Header) -> fits.Header:
    """Extension header plus the primary header's keys it does not define (FITS ``INHERIT``)."""
    out = ext.copy()
    for card in primary.cards:
        if card.keyword not in _STRUCTURAL and card.keyword not in out:
            out.append(card)
    return out


def raw_name(path: str | Path) -> str:
    """Exposure name of a raw file: the file name without ``.fits``/``.fits.fz``/``.fz``."""
    name = Path(path).name
    for suffix in (".fits.fz", ".fits.gz", ".fits", ".fz"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


@dataclass
class RawSection:
    """One section (CCD) of a raw exposure.

    Attributes
    ----------
    data : float32 array (ADU), the whole section including overscan columns.
    header : HDU header merged with the primary header's inherited keys; its WCS is that of
        the untrimmed ``data`` grid.
    ccd : section name.
    datasec : slices ``(y, x)`` of the data region in ``data``.
    overscans : per amplifier ``(data-region slices, overscan slices)``, both in ``data``
        coordinates; empty when the file has no overscan (processed images).
    gain : e-/ADU, one per amplifier (aligned with ``overscans``) or one float.
    read_noise : e-, one per amplifier or one float.
    saturation : ADU of the raw values (before overscan subtraction).
    bad_pixel_mask : bool array over the data region (True = bad), or None.
    path : the file read.
    """

    data: np.ndarray
    header: fits.Header
    ccd: str
    datasec: Slices
    overscans: list[tuple[Slices, Slices]]
    gain: float | list[float]
    read_noise: float | list[float]
    saturation: float
    bad_pixel_mask: np.ndarray | None = None
    path: Path | None = None

    @property
    def trimmed_shape(self) -> tuple[int, int]:
        """Shape (ny, nx) of the data region."""
        ys, xs = self.datasec
        return ys.stop - ys.start, xs.stop - xs.start

    def amp_values(self, values: float | list[float]) -> np.ndarray:
        """Per-pixel values over the data region from per-amplifier ``values`` (float32);
        e.g. ``raw.amp_values(raw.gain)`` is the gain map in e-/ADU."""
        out = np.empty(self.trimmed_shape, dtype=np.float32)
        if np.ndim(values) == 0 or not self.overscans:
            out[...] = float(np.mean(values))
            return out
        y0, x0 = self.datasec[0].start, self.datasec[1].start
        for (ys, xs), value in zip((amp for amp, _ in self.overscans), values):
            out[ys.start - y0: ys.stop - y0, xs.start - x0: xs.stop - x0] = value
        return out


class Instrument:
    """A camera: its sections, header keywords, and how to read its raw exposures.

    Subclasses set the class attributes and :meth:`section_names`; the header keyword map
    ``keywords`` lists, per standard key, the header keywords tried in order.
    """

    name = "BASE"
    pixel_scale = 1.0  # arcsec/pix
    filters: tuple[str, ...] = ()
    #: standard key -> header keywords tried in order (primary, then first extension)
    keywords: dict[str, tuple[str, ...]] = {
        "filter": ("FILTER",), "mjd": ("MJD-OBS",), "date": ("DATE-OBS",),
        "exptime": ("EXPTIME",), "ra": ("RA",), "dec": ("DEC",), "airmass": ("AIRMASS",),
        "obstype": ("OBSTYPE",), "section": ("EXTNAME", "CCDNAME", "DETPOS"),
        "seeing": ("SEEING", "FWHM"), "depth": ("PHOTDPTH", "MAGLIM", "DEPTH"),
    }
    #: used when a header has no gain / read-noise keyword
    default_gain = 1.0
    default_read_noise = 0.0

    #: raw exposures are simulated (rules simulate_exposure and simulate_calibration make them)
    simulated = False

    def __init__(self, cfg: dict | None = None):
        self.cfg = cfg or {}

    # -- names -----------------------------------------------------------------------
    def section_names(self) -> list[str]:
        raise NotImplementedError

    def exposure_names(self, cfg: dict) -> list[str]:
        """Science exposures: ``images.exposures`` or the raw folder's object exposures."""
        listed = cfg["images"].get("exposures")
        if listed:
            return list(listed)
        scanned = self._scan_raw(cfg)
        names = [n for n, t in scanned.items() if t["kind"] == "object"]
        if not names:  # planning nothing without a word looked like a finished night
            folder = self.raw_folder()
            found = (f"{len(scanned)} raw files, none an object exposure (kinds: "
                     f"{sorted({t['kind'] for t in scanned.values()})})" if scanned
                     else "no .fits/.fits.fz file" if folder.is_dir() else "the folder does not exist")
            raise ValueError(f"{cfg['images']['instrument']}: no science exposure in the raw folder {folder} "
                             f"({found}); put the raw files there or list them in images.exposures")
        return names

    def calibration_names(self, cfg: dict) -> dict:
        """``{"bias": [names], "flat": {filter: [names]}}`` from ``images.bias_exposures`` /
        ``images.flat_exposures`` or, where those are null, the raw folder's ``OBSTYPE``."""
        bias = cfg["images"].get("bias_exposures")
        flat = cfg["images"].get("flat_exposures")
        if bias is None or flat is None:
            scanned = self._scan_raw(cfg)
            if bias is None:
                bias = [n for n, t in scanned.items() if t["kind"] == "bias"]
            if flat is None:
                flat = {}
                for n, t in scanned.items():
                    if t["kind"] == "flat":
                        flat.setdefault(t["filter"], []).append(n)
        return {"bias": list(bias), "flat": {f: list(v) for f, v in flat.items()}}

    def raw_folder(self) -> Path:
        """The instrument's raw folder, ``{data_root}/{INSTRUMENT}/raw``."""
        from vo.paths import Paths
        return Paths(self.cfg).raw_exposure(self.name, "x").parent

    def input_files(self) -> list[Path]:
        """The files the run's plan depends on: the raw folder's (their names, sizes and times
        enter the plan's key, :func:`vo.pipeline.plan.plan_key`)."""
        folder = self.raw_folder()
        return sorted(folder.iterdir()) if folder.is_dir() else []

    def _scan_raw(self, cfg: dict) -> dict:
        """Raw files of the instrument's raw folder: name -> {kind, filter} (sorted by name)."""
        folder = self.raw_folder()
        out = {}
        if not folder.is_dir():
            return out
        files = sorted(p for p in folder.iterdir()
                       if p.name.endswith((".fits", ".fits.fz")) and not p.name.endswith(".truth.fits"))
        for p in files:
            info = self.read_exposure_header(p)
            out.setdefault(info["exposure"], {"kind": info["kind"], "filter": info["filter"]})
        return out

    def image_rows(self, cfg: dict, exposures: list[str], ccds: list[str]) -> list[dict]:
        """Per image (CCD ``ccds`` of each exposure) what reference planning needs
        (:meth:`header_row`; :mod:`vo.images.reference.pairing`).  Reads the raw headers only."""
        from vo.paths import Paths

        paths, wanted, rows = Paths(cfg), set(ccds), []
        for exposure in exposures:
            path = self.raw_path(paths, exposure)
            with open_raw(path) as hdul:
                for ccd, i in self.data_hdus(hdul, path):
                    if ccd in wanted:
                        rows.append(self.header_row(exposure, ccd, hdul[0].header, hdul[i], path))
        return rows

    def data_hdus(self, hdul: fits.HDUList, path: Path) -> list[tuple[str, int]]:
        """(section, HDU index) of a file's image HDUs, named by :meth:`section_name_of`."""
        return [(self.section_name_of(h.header), i) for i, h in enumerate(hdul)
                if h.header.get("NAXIS", 0) >= 2 or isinstance(h, fits.CompImageHDU)]

    def header_row(self, exposure: str, ccd: str, primary: fits.Header, hdu, path) -> dict:
        """Exposure, ccd, filter, mjd, seeing and depth (as the headers give them, NaN when absent;
        they only rank images of one camera), the footprint's four sky corners (deg, from the
        header WCS) and the shape (ny, nx) of one image HDU."""
        from astropy.wcs import WCS, FITSFixedWarning
        from vo.sky import corners

        header = hdu.header if hdu.header is primary else merge_headers(primary, hdu.header)
        info = self.exposure_info([primary, header], exposure, path)
        nx = int(header.get("ZNAXIS1", header.get("NAXIS1", 0)))
        ny = int(header.get("ZNAXIS2", header.get("NAXIS2", 0)))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FITSFixedWarning)
            try:
                wcs = WCS(header, naxis=2)
            except Exception as exc:  # astropy raises several kinds for bad WCS cards
                raise FitsError(f"{path}[{ccd}]: no usable WCS in the header ({exc})") from exc
        if not wcs.has_celestial:
            raise FitsError(f"{path}[{ccd}]: no celestial WCS (CTYPE1/2) in the header: the image cannot "
                            f"be placed on the sky")
        return {**info, "ccd": ccd, "corners": corners(wcs, nx, ny), "shape": (ny, nx),
                "seeing": _float_or_nan(self._get([header], "seeing")),
                "depth": _float_or_nan(self._get([header], "depth"))}

    def catalog_fetcher(self):
        """A reference-catalog fetcher of the instrument's own (a simulated camera's catalog), or
        None: the Gaia archive is asked (:mod:`vo.images.astrometry.excerpts`)."""
        return None

    def raw_path(self, paths, exposure: str) -> Path:
        """Raw file of ``exposure``: ``.fits`` or, when only that exists, ``.fits.fz``."""
        plain = paths.raw_exposure(self.name, exposure)
        packed = paths.raw_exposure(self.name, exposure, suffix=".fits.fz")
        return packed if packed.exists() and not plain.exists() else plain

    def exposure_filter(self, paths, exposure: str) -> str:
        """Filter of a science exposure (read from its raw header)."""
        return self.read_exposure_header(self.raw_path(paths, exposure))["filter"]

    # -- headers ---------------------------------------------------------------------
    def parse_filter(self, value) -> str:
        """Short filter name from a header value (first word)."""
        value = str(value or "").strip()
        return value.split()[0] if value else ""

    def _get(self, headers: list[fits.Header], key: str, default=None):
        for h in headers:
            for kw in self.keywords.get(key, ()):
                if kw in h and h[kw] not in (None, ""):
                    return h[kw]
        return default

    def read_exposure_header(self, path: str | Path) -> dict:
        """Standard keys of an exposure: exposure, filter, mjd, exptime (s), ra, dec (deg,
        pointing), airmass, kind (object/bias/flat)."""
        path = Path(path)
        with open_raw(path) as hdul:
            headers = [hdul[0].header] + ([hdul[1].header] if len(hdul) > 1 else [])
            return self.exposure_info(headers, raw_name(path), path)

    def exposure_info(self, headers: list[fits.Header], exposure: str, path: Path | str = "") -> dict:
        """Standard keys (see :meth:`read_exposure_header`) from ``headers``."""
        mjd = self._get(headers, "mjd")
        if mjd is None:
            date = self._get(headers, "date")
            if date is None:
                raise FitsError(f"{path}: no {self.keywords['mjd']} or {self.keywords['date']} keyword")
            mjd = Time(date, format="isot", scale="utc").mjd
        exptime = self._get(headers, "exptime")
        if exptime is None:
            raise FitsError(f"{path}: no exposure time keyword {self.keywords['exptime']}")
        return {"exposure": exposure, "filter": self.parse_filter(self._get(headers, "filter")),
                "mjd": float(mjd), "exptime": float(exptime),
                "ra": _angle(self._get(headers, "ra"), hours=True),
                "dec": _angle(self._get(headers, "dec"), hours=False),
                "airmass": _float_or_nan(self._get(headers, "airmass")),
                "kind": self.exposure_kind(self._get(headers, "obstype"))}

    @staticmethod
    def exposure_kind(obstype) -> str:
        """``object``, ``bias`` or ``flat`` from an ``OBSTYPE`` value (missing = object)."""
        t = str(obstype or "object").strip().lower()
        if t in ("zero", "bias"):
            return "bias"
        if "flat" in t:
            return "flat"
        return "object"

    # -- sections --------------------------------------------------------------------
    def section_name_of(self, header: fits.Header) -> str | None:
        """Section name an HDU header declares (first of ``keywords['section']``)."""
        for kw in self.keywords["section"]:
            if kw in header and str(header[kw]).strip():
                return str(header[kw]).strip()
        return None

    def read_section(self, path: str | Path, ccd: str) -> RawSection:
        """Read section ``ccd`` of a raw exposure (``.fits`` or ``.fits.fz``).

        Raises :class:`~vo.io.fits.FitsError` naming the file for a missing, truncated or
        corrupt file, and naming the file and the section when the section is absent.
        """
        path = Path(path)
        with open_raw(path) as hdul:
            index, names = None, []
            for i, hdu in enumerate(hdul):
                if hdu.header.get("NAXIS", 0) < 2 and not isinstance(hdu, fits.CompImageHDU):
                    continue  # header-only primary of a multi-extension file
                name = self.section_name_of(hdu.header)
                names.append(name)
                if name == ccd:
                    index = i
                    break
            if index is None:
                raise FitsError(f"{path}: no section {ccd!r} (sections in the file: {names})")
            hdu = hdul[index]
            try:
                data = np.asarray(hdu.data, dtype=np.float32)
            except Exception as exc:  # astropy raises several kinds for damaged data
                raise FitsError(f"{path}: cannot read section {ccd!r} "
                                f"({type(exc).__name__}: {exc})") from exc
            header = hdu.header.copy() if index == 0 else merge_headers(hdul[0].header, hdu.header)
        if data.ndim != 2:
            raise FitsError(f"{path}: section {ccd!r} is not a 2-d image (shape {data.shape})")
        return self.make_section(data, header, ccd, path)

    def make_section(self, data: np.ndarray, header: fits.Header, ccd: str, path: Path | None) -> RawSection:
        """RawSection with the geometry of ``header`` (DATASEC/BIASSEC, gain, noise, saturation)."""
        where = f"{path}[{ccd}]"
        try:
            amps = []
            for amp in AMPS:
                if f"DATASEC{amp}" in header and f"BIASSEC{amp}" in header:
                    amps.append((amp, parse_section(header[f"DATASEC{amp}"], f"{where} DATASEC{amp}"),
                                 parse_section(header[f"BIASSEC{amp}"], f"{where} BIASSEC{amp}")))
            if "DATASEC" in header:
                datasec = parse_section(header["DATASEC"], f"{where} DATASEC")
            elif amps:
                datasec = (slice(min(a[1][0].start for a in amps), max(a[1][0].stop for a in amps)),
                           slice(min(a[1][1].start for a in amps), max(a[1][1].stop for a in amps)))
            else:
                datasec = (slice(0, data.shape[0]), slice(0, data.shape[1]))
        except ValueError as exc:
            raise FitsError(str(exc)) from exc
        for sl in [datasec] + [s for a in amps for s in a[1:]]:
            if sl[0].stop > data.shape[0] or sl[1].stop > data.shape[1]:
                raise FitsError(f"{where}: section {format_section(sl)} lies outside the "
                                f"{data.shape[1]}x{data.shape[0]} array")

        def per_amp(prefix: str, single: str, default: float):
            base = header.get(single)
            if amps:
                return [float(header.get(f"{prefix}{a}", base if base is not None else default))
                        for a, _, _ in amps]
            if base is not None:
                return float(base)
            found = [float(header[f"{prefix}{a}"]) for a in AMPS if f"{prefix}{a}" in header]
            return float(np.mean(found)) if found else float(default)

        gain = per_amp("GAIN", "GAIN", self.default_gain)
        read_noise = per_amp("RDNOISE", "RDNOISE", self.default_read_noise)
        if "SATURATE" in header:
            saturation = float(header["SATURATE"])
        else:
            sat = [float(header[f"SATURAT{a}"]) for a in AMPS if f"SATURAT{a}" in header]
            saturation = min(sat) if sat else float("inf")
        return RawSection(data=data, header=header, ccd=ccd, datasec=datasec,
                          overscans=[(d, b) for _, d, b in amps], gain=gain, read_noise=read_noise,
                          saturation=saturation, bad_pixel_mask=self.bad_pixel_mask(ccd, datasec),
                          path=path)

    def bad_pixel_mask(self, ccd: str, datasec: Slices) -> np.ndarray | None:
        """Known bad pixels of section ``ccd`` over its data region (None: none known)."""
        return None


class open_raw:
    """Context manager: open a raw FITS file, checking it exists and is not truncated.

    Only headers are read on opening; each HDU's data is read when accessed, so reading one
    section of a large multi-extension file does not read the others.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.hdul = None

    def __enter__(self) -> fits.HDUList:
        if not self.path.exists():
            raise FitsError(f"{self.path}: file not found")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", fits.verify.VerifyWarning)
                warnings.filterwarnings("error", message=".*truncated.*")
                self.hdul = fits.open(self.path, memmap=False, lazy_load_hdus=False)
        except Exception as exc:  # astropy raises OSError/ValueError/TypeError variants
            raise FitsError(f"{self.path}: not a readable FITS file ({type(exc).__name__}: {exc})") from exc
        if len(self.hdul) == 0:
            raise FitsError(f"{self.path}: no HDUs")
        return self.hdul

    def __exit__(self, *exc) -> None:
        if self.hdul is not None:
            self.hdul.close()


def _float_or_nan(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def _angle(value, hours: bool) -> float:
    """Degrees from a float (deg) or a sexagesimal string (hours for RA, degrees for Dec)."""
    if value is None:
        return float("nan")
    if isinstance(value, str) and ":" in value:
        sign = -1.0 if value.strip().startswith("-") else 1.0
        parts = [abs(float(p)) for p in value.strip().lstrip("+-").split(":")]
        deg = sum(p / 60.0 ** i for i, p in enumerate(parts))
        return sign * deg * (15.0 if hours else 1.0)
    return _float_or_nan(value)
