"""Already-calibrated images from any telescope as a workflow instrument (``images.instrument:
calibrated``): a folder or glob of FITS files, each file one exposure, read as they are
(:mod:`vo.images.calibrate.calibrated`; NOIRLab Community Pipeline InstCal ``ooi`` files with
their ``oow``/``ood`` companions), no bias, flat or preprocessing of ours.

Config section ``calibrated``:

* ``files``: glob patterns (absolute, or relative to ``{data_root}/CALIBRATED/raw``); the
  exposure name is the file name without ``.fits``/``.fits.fz``/``.fits.gz``, and must be unique;
* ``format``: ``instcal`` (companions ``_oow_``/``_ood_`` beside each ``_ooi_`` file, which
  are not exposures themselves), ``fits`` (any calibrated FITS), or ``auto`` (``instcal`` for
  ``_ooi_`` names);
* ``keywords``: our key -> header keyword(s) (gain, read_noise, saturation, filter, mjd, date,
  exptime, seeing, depth, ...), over the conventions of :data:`vo.images.calibrate.calibrated.KEYWORDS`;
* ``weight``, ``mask``, ``mask_bits``, ``gain``, ``saturation``: as in
  :func:`~vo.images.calibrate.calibrated.read_calibrated`.

Sections: files with one image HDU each (survey cutouts: every file may come from a different
CCD) have one section, ``"1"`` (the camera's CCD name is kept in the header as ``DETPOS``);
multi-extension files (a whole InstCal exposure) have the image HDUs' names as sections, the
same in every file (else an error naming the file).
"""

from __future__ import annotations

import glob
from functools import cached_property
from pathlib import Path

from astropy.io import fits

from vo.images.calibrate.calibrated import KEYWORDS, instcal_files
from vo.images.instruments.base import Instrument, open_raw, raw_name
from vo.io.fits import FitsError

#: the section name of single-image files
SINGLE = "1"


def _keyword_map(cfg: dict) -> dict:
    """Instrument keyword map (standard key -> tuple of header keywords): the calibrated-image
    conventions, then the config's ``calibrated.keywords`` (which win)."""
    out = {k: tuple(v) for k, v in Instrument.keywords.items()}
    for key, names in {**KEYWORDS, **cfg.get("calibrated", {}).get("keywords", {})}.items():
        names = (names,) if isinstance(names, str) else tuple(names)
        out[key] = names + tuple(n for n in out.get(key, ()) if n not in names)
    return out


class Calibrated(Instrument):
    """Calibrated FITS images of any camera, listed by the config (see the module doc)."""

    name = "calibrated"
    calibrated = True

    def __init__(self, cfg: dict):
        super().__init__(cfg)
        self.pars = cfg.get("calibrated", {})
        self.keywords = _keyword_map(cfg)

    # -- files -------------------------------------------------------------------------
    def _instcal(self, path: Path) -> bool:
        fmt = self.pars.get("format", "auto")
        return fmt == "instcal" or (fmt == "auto" and "_ooi_" in path.name)

    @cached_property
    def files(self) -> dict[str, Path]:
        """Exposure name -> file, from ``calibrated.files`` (sorted by name)."""
        patterns = self.pars.get("files") or ["*.fits", "*.fits.fz", "*.fits.gz"]
        found: dict[str, Path] = {}
        for pattern in patterns:
            full = pattern if Path(pattern).is_absolute() else str(self.raw_folder() / pattern)
            for p in sorted(glob.glob(full, recursive=True)):
                path = Path(p)
                if not path.is_file() or any(f"_{k}_" in path.name for k in ("oow", "ood")):
                    continue  # InstCal companions are read with their image
                name = raw_name(path)
                if name in found and found[name] != path:
                    raise FitsError(f"calibrated.files: two files give exposure {name!r}: {found[name]} "
                                    f"and {path}; rename one")
                found[name] = path
        return dict(sorted(found.items()))

    def input_files(self) -> list[Path]:
        """Every file the plan depends on (the images and the InstCal companions beside them)."""
        out = []
        for path in self.files.values():
            out += [path, *(p for p in instcal_files(path) if p is not None)]
        return out

    def exposure_names(self, cfg: dict) -> list[str]:
        """``images.exposures`` or every file ``calibrated.files`` matches."""
        listed = cfg["images"].get("exposures")
        if listed:
            unknown = sorted(set(listed) - set(self.files))
            if unknown:
                raise FitsError(f"images.exposures: no file for {unknown} under calibrated.files "
                                f"{self.pars.get('files')}")
            return list(listed)
        if not self.files:
            raise FitsError(f"calibrated.files {self.pars.get('files')}: no FITS file matches "
                            f"(relative patterns are under {self.raw_folder()})")
        return list(self.files)

    def calibration_names(self, cfg: dict) -> dict:
        """None: the images are calibrated already."""
        return {"bias": [], "flat": {}}

    def raw_path(self, paths, exposure: str) -> Path:
        try:
            return self.files[exposure]
        except KeyError:
            raise FitsError(f"exposure {exposure!r}: no file under calibrated.files {self.pars.get('files')}") from None

    # -- sections ----------------------------------------------------------------------
    def data_hdus(self, hdul: fits.HDUList, path: Path) -> list[tuple[str, int]]:
        """(section, HDU index) of the file's images: ``"1"`` for a single-image file."""
        images = [i for i, h in enumerate(hdul) if h.is_image and h.header.get("NAXIS", 0) == 2
                  or isinstance(h, fits.CompImageHDU)]
        if len(images) == 1:
            return [(SINGLE, images[0])]
        out = []
        for i in images:
            name = self.section_name_of(hdul[i].header)
            if not name:
                raise FitsError(f"{path}: image HDU {i} has no name ({self.keywords['section']})")
            out.append((name, i))
        return out

    @cached_property
    def _sections(self) -> list[str]:
        names: list[str] | None = None
        for path in self.files.values():
            with open_raw(path) as hdul:
                these = [n for n, _ in self.data_hdus(hdul, path)]
            if names is None:
                names = these
            elif these != names:
                raise FitsError(f"{path}: image sections {these} differ from the other files' {names} "
                                f"(single-image files and multi-extension files cannot be mixed)")
        return names or [SINGLE]

    def section_names(self) -> list[str]:
        return list(self._sections)

    # -- reading -----------------------------------------------------------------------
    def read_image(self, path: str | Path, ccd: str, exposure: str):
        """Section ``ccd`` of calibrated file ``path`` as an Image in e- (InstCal with its
        companions), its header carrying the exposure keys the later steps read."""
        from vo.images.calibrate.calibrated import read_calibrated, read_instcal

        path = Path(path)
        with open_raw(path) as hdul:
            hdus = dict(self.data_hdus(hdul, path))
            primary = hdul[0].header.copy()
        if ccd not in hdus:
            raise FitsError(f"{path}: no section {ccd!r} (sections: {sorted(hdus)})")
        kw = {k: self.pars[k] for k in ("weight", "mask", "mask_bits", "saturation") if self.pars.get(k) is not None}
        keywords = {k: list(v) for k, v in self.keywords.items()}
        if self._instcal(path):
            image = read_instcal(path, hdu=hdus[ccd], gain=self.pars.get("gain"), keywords=keywords,
                                 **{k: v for k, v in kw.items() if k not in ("weight", "mask")})
        else:
            image = read_calibrated(path, hdu=hdus[ccd], gain=self.pars.get("gain"), keywords=keywords, **kw)
        h = image.header
        info = self.exposure_info([h, primary], exposure, path)
        detpos = self.section_name_of(h)
        h["FILTER"] = (info["filter"], "filter (short name)")
        h["EXPOSURE"] = exposure
        h["CCD"] = (ccd, "section of the exposure (the run's ccd)")
        if detpos and ccd == SINGLE:
            h["DETPOS"] = (detpos, "the camera's CCD")
        h["MJD-OBS"], h["EXPTIME"] = info["mjd"], info["exptime"]
        camera = h.get("INSTRUME", primary.get("INSTRUME"))
        if camera:
            h["CAMERA"] = (str(camera), "the camera (its photometric system)")
        h["INSTRUME"] = (self.name, "the run's instrument")
        return image
