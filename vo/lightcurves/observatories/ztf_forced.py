"""ZTF forced-photometry service (ZFPS, Masci et al. 2023, arXiv:2305.16279) light curves.

The service measures PSF-fit fluxes at a fixed position on every ZTF difference image that
covers it and returns one text file per position (``forcedphotometry_req*_lc.txt`` or
``batchfp_req*_lc.txt``): ``#`` comment lines with the requested position and the column
definitions, a line of comma-separated column names, then one whitespace-separated row per
epoch. :func:`read_forced_photometry` reads such a file as it is; :func:`forced_lightcurve`
turns it into a difference-flux light curve:

* **zero points**: the difference flux (DN) times ``10**(0.4 * (23.9 - zpdiff))`` is the flux in
  microjansky (AB: 23.9 mag = 1 uJy); every epoch has its own ``zpdiff``.
* **bad epochs** are flagged (:data:`FLAG_BITS`), never dropped: a non-null flux is required;
  ``procstatus`` codes that affect the photometry (:data:`BAD_PROCSTATUS`, from the service's
  table of codes; 57 "no reference source within 5 arcsec" and 62 "start JD reset" do not: a
  hostless transient has 57 on every epoch); and the image-quality cuts of Yao et al. 2019
  (ApJ 886, 152, section 2.2), as the Bright Transient Survey applies them to this service's
  output: ``infobitssci > 0``, ``scisigpix > 25`` DN, ``sciinpseeing > 5`` pix (thresholds in the
  config). ``infobitssci >= 2**25`` marks cloudy images (ZTF cautionary notes, section 2.4).
* **baseline**: a difference flux is relative to the reference image, which may hold some of
  the source's light, so each reference (``fcqfid`` = field, CCD, quadrant and filter, Yao et al.
  2019) gets its own baseline: the median flux of its good epochs in the baseline window,
  subtracted. ``auto`` finds the time of peak (the maximum of a 14-day running median of the
  good g and r fluxes) and takes the epochs more than ``pre_days`` before it, or, when fewer
  than ``min_epochs`` are, those more than ``post_days`` after it (BTS). Uncertainties of a
  reference whose baseline epochs scatter more than they should (reduced chi^2 > 1) are
  multiplied by its square root (Yao et al. 2019; the service's guide).
* **detections and upper limits**: ``snr = flux / fluxerr``; an epoch with ``snr > snt`` (3) is
  a detection with ``mag = 23.9 - 2.5 log10(flux)``, ``magerr = 1.0857 / snr``; every epoch has
  its ``snu``-sigma (5) limiting magnitude ``23.9 - 2.5 log10(snu * fluxerr)``.

Units: times JD and MJD (days), fluxes microjansky unless the column says DN, magnitudes AB.
"""

from __future__ import annotations

import os
import re

import numpy as np
import pandas as pd

from vo.lightcurves.segments import AB_ZP_UJY

#: Columns a forced-photometry file must have for a light curve.
REQUIRED_COLUMNS = ("field", "ccdid", "qid", "filter", "jd", "forcediffimflux", "forcediffimfluxunc",
                    "zpdiff", "procstatus")
#: Missing-value markers of the service's files (old versions: -99999; new: null).
NULL_VALUES = ["null", "NaN", "nan", "-99999", "-99999.0", "-99999.000000"]
#: procstatus codes that make an epoch's photometry unreliable (the service's table of codes):
#: 56 bad (NaN'd) pixels near the position, 59 suspect uncertainties (early difference image),
#: 60 non-odd PSF dimensions, 61 cutout off the image or at its edge, 63 no epochs, 64
#: catastrophic error, 65 end JD before the survey, 255 database error.
BAD_PROCSTATUS = frozenset({56, 59, 60, 61, 63, 64, 65, 255})
#: Flag bits of :func:`forced_lightcurve`'s ``flag`` column (0 = good).
FLAG_BITS = {"null_flux": 1, "procstatus": 2, "infobits": 4, "scisigpix": 8, "seeing": 16}
#: ZTF filter names of the files -> the filter codes of IRSA's light curves; filter ids.
FILTERS = {"ZTF_g": ("zg", 1), "ZTF_r": ("zr", 2), "ZTF_i": ("zi", 3)}
#: Defaults of the ``ZTF.forced_photometry`` config section (see config/schema.yaml).
DEFAULTS = {"snt": 3.0, "snu": 5.0, "max_scisigpix": 25.0, "max_seeing": 5.0, "reject_infobits": True,
            "baseline": "auto", "baseline_pre_days": 100.0, "baseline_post_days": 500.0,
            "baseline_min_epochs": 10, "rescale_errors": True}
_META = {"ra": r"Requested input R\.A\.\s*=\s*([-+\d.eE]+)", "dec": r"Requested input Dec\.\s*=\s*([-+\d.eE]+)",
         "jd_start": r"Requested JD start\s*=\s*([-+\d.eE]+)", "jd_end": r"Requested JD end\s*=\s*([-+\d.eE]+)"}


class ForcedPhotometryError(ValueError):
    """A file that is not a usable ZTF forced-photometry light curve (the message names it)."""


def read_forced_photometry(path: str | os.PathLike) -> pd.DataFrame:
    """One forced-photometry file as a DataFrame (the service's columns, one row per epoch).

    ``attrs`` holds ``file`` and, where the header gives them, the requested ``ra``, ``dec``
    (deg), ``jd_start`` and ``jd_end`` (JD). Missing values (``null``, -99999) become NaN.
    Raises :class:`ForcedPhotometryError` naming the file (and the column) for a file that has
    no column line, lacks a required column, or has a non-numeric value in a numeric column.
    """
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError as exc:
        raise ForcedPhotometryError(f"ZTF forced photometry {path}: cannot read ({exc.strerror})") from None
    header = [ln for ln in lines if ln.lstrip().startswith("#")]
    body = [ln for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
    names_at = next((i for i, ln in enumerate(body) if "," in ln and "forcediffimflux" in ln), None)
    if names_at is None:
        raise ForcedPhotometryError(f"ZTF forced photometry {path}: no column line (a line of comma-separated "
                                    f"names with forcediffimflux): not a forced-photometry service file")
    names = [n.strip() for n in body[names_at].split(",") if n.strip()]
    missing = [c for c in REQUIRED_COLUMNS if c not in names]
    if missing:
        raise ForcedPhotometryError(f"ZTF forced photometry {path}: lacks columns {missing}")
    rows = [ln.split() for ln in body[names_at + 1:]]
    bad = next((i for i, r in enumerate(rows) if len(r) != len(names)), None)
    if bad is not None:
        raise ForcedPhotometryError(f"ZTF forced photometry {path}: data row {bad + 1} has {len(rows[bad])} "
                                    f"values for {len(names)} columns")
    table = pd.DataFrame(rows, columns=names).replace(NULL_VALUES, np.nan)
    for col in names:
        if col == "filter":
            continue
        try:
            table[col] = pd.to_numeric(table[col])
        except (ValueError, TypeError):
            bad_value = table[col][pd.to_numeric(table[col], errors="coerce").isna() & table[col].notna()].iloc[0]
            raise ForcedPhotometryError(f"ZTF forced photometry {path}: column {col!r} has the non-numeric "
                                        f"value {bad_value!r}") from None
    unknown = sorted(set(table["filter"].dropna()) - set(FILTERS))
    if unknown:
        raise ForcedPhotometryError(f"ZTF forced photometry {path}: unknown filter(s) {unknown} "
                                    f"(expected {sorted(FILTERS)})")
    text = "\n".join(header)
    table.attrs["file"] = path
    for key, pattern in _META.items():
        m = re.search(pattern, text)
        if m:
            table.attrs[key] = float(m.group(1))
    return table


def fcqfid(table: pd.DataFrame) -> np.ndarray:
    """Reference-image key per epoch: ``field * 10000 + ccdid * 100 + qid * 10 + filter id``."""
    fid = table["filter"].map({k: v[1] for k, v in FILTERS.items()}).to_numpy(dtype=np.int64)
    return (table["field"].to_numpy(np.int64) * 10000 + table["ccdid"].to_numpy(np.int64) * 100
            + table["qid"].to_numpy(np.int64) * 10 + fid)


def quality_flags(table: pd.DataFrame, pars: dict | None = None) -> np.ndarray:
    """Bit mask (:data:`FLAG_BITS`) of the reasons each epoch is unreliable; 0 = good."""
    p = {**DEFAULTS, **(pars or {})}
    flux, unc, zp = (table[c].to_numpy(float) for c in ("forcediffimflux", "forcediffimfluxunc", "zpdiff"))
    flag = np.where(~(np.isfinite(flux) & np.isfinite(zp) & (unc > 0)), FLAG_BITS["null_flux"], 0)
    status = table["procstatus"].to_numpy(float)
    flag |= np.where(np.isin(status, list(BAD_PROCSTATUS)), FLAG_BITS["procstatus"], 0)
    if p["reject_infobits"] and "infobitssci" in table:
        flag |= np.where(table["infobitssci"].fillna(0).to_numpy(float) > 0, FLAG_BITS["infobits"], 0)
    if "scisigpix" in table:
        flag |= np.where(table["scisigpix"].to_numpy(float) > float(p["max_scisigpix"]), FLAG_BITS["scisigpix"], 0)
    if "sciinpseeing" in table:
        flag |= np.where(table["sciinpseeing"].to_numpy(float) > float(p["max_seeing"]), FLAG_BITS["seeing"], 0)
    return flag.astype(np.int64)


def peak_jd(jd, flux, good, window: float = 14.0) -> float:
    """JD of the maximum of the running median (``window`` days wide, centred) of the good
    epochs' fluxes; NaN without good epochs."""
    jd, flux = np.asarray(jd, float)[good], np.asarray(flux, float)[good]
    if jd.size == 0:
        return np.nan
    order = np.argsort(jd)
    jd, flux = jd[order], flux[order]
    lo = np.searchsorted(jd, jd - window / 2, side="left")
    hi = np.searchsorted(jd, jd + window / 2, side="right")
    # a few hundred epochs per file: one median per epoch over its window is cheap
    med = np.array([np.median(flux[a:b]) for a, b in zip(lo, hi)])
    return float(jd[int(np.argmax(med))])


def baseline_epochs(jd, good, key, pars: dict, t_peak: float) -> np.ndarray:
    """Boolean mask of the epochs that define each reference's baseline (see the module doc)."""
    jd = np.asarray(jd, float)
    mode = pars["baseline"]
    if mode in (None, "none", False):
        return np.zeros(jd.size, bool)
    if isinstance(mode, (list, tuple)):                          # an explicit JD window
        return good & (jd >= float(mode[0])) & (jd <= float(mode[1]))
    if mode != "auto":
        raise ValueError(f"ZTF.forced_photometry.baseline: {mode!r} is not auto, none or [jd_start, jd_end]")
    pre = good & (jd < t_peak - float(pars["baseline_pre_days"]))
    post = good & (jd > t_peak + float(pars["baseline_post_days"]))
    use = np.zeros(jd.size, bool)
    n_min = int(pars["baseline_min_epochs"])
    for k in np.unique(key):
        mine = key == k
        if (pre & mine).sum() >= n_min:
            use |= pre & mine
        elif (post & mine).sum() >= n_min:
            use |= post & mine
    return use


def forced_lightcurve(table: pd.DataFrame, pars: dict | None = None) -> pd.DataFrame:
    """The difference-flux light curve of a forced-photometry table (:func:`read_forced_photometry`).

    Returns one row per epoch, in time order, with ``jd``, ``mjd`` (days), ``filter`` (zg, zr,
    zi), ``fcqfid``, ``flux_dn`` and ``fluxerr_dn`` (the service's values, DN), ``zpdiff`` (mag),
    ``flux_diff`` (uJy, the service's flux on the AB scale, no baseline), ``baseline`` (uJy,
    NaN where the reference has too few baseline epochs: then no correction), ``flux`` and
    ``fluxerr`` (uJy, baseline subtracted, errors rescaled), ``snr``, ``is_detection``, ``mag``
    and ``magerr`` (AB, detections only), ``mag_lim`` (AB, the ``snu``-sigma limit), ``flag``
    (:data:`FLAG_BITS`), ``is_baseline`` and ``flux_ref`` (uJy: the nearest reference-image
    source's flux, for absolute light curves of variables; NaN where none). ``attrs`` carries the
    file's plus ``t_peak`` (JD), per-reference ``baselines`` {fcqfid: (uJy, n epochs, error scale)}.
    """
    p = {**DEFAULTS, **(pars or {})}
    t = table.sort_values("jd", kind="stable").reset_index(drop=True)
    scale = 10.0 ** (0.4 * (AB_ZP_UJY - t["zpdiff"].to_numpy(float)))     # DN -> uJy per epoch
    flux_dn, unc_dn = t["forcediffimflux"].to_numpy(float), t["forcediffimfluxunc"].to_numpy(float)
    flux_diff, err = flux_dn * scale, unc_dn * scale
    flag = quality_flags(t, p)
    good = flag == 0
    key = fcqfid(t)
    band = t["filter"].map({k: v[0] for k, v in FILTERS.items()}).to_numpy(object)
    jd = t["jd"].to_numpy(float)
    t_peak = peak_jd(jd, flux_diff, good & np.isin(band, ["zg", "zr"]))
    base_mask = baseline_epochs(jd, good, key, p, t_peak)
    baseline = np.full(len(t), np.nan)
    err_scale = np.ones(len(t))
    summary = {}
    for k in np.unique(key):
        use = base_mask & (key == k)
        if use.sum() < 2:
            continue
        c = float(np.median(flux_diff[use]))
        chi2 = float(np.sum(((flux_diff[use] - c) / err[use]) ** 2) / (use.sum() - 1))
        s = np.sqrt(chi2) if (p["rescale_errors"] and chi2 > 1) else 1.0
        baseline[key == k], err_scale[key == k] = c, s
        summary[int(k)] = (c, int(use.sum()), float(s))
    flux = flux_diff - np.nan_to_num(baseline)
    fluxerr = err * err_scale
    with np.errstate(divide="ignore", invalid="ignore"):
        snr = flux / fluxerr
        det = good & (snr > float(p["snt"]))
        mag = np.where(det, AB_ZP_UJY - 2.5 * np.log10(np.where(det, flux, 1.0)), np.nan)
        magerr = np.where(det, 1.0857 / snr, np.nan)
        mag_lim = AB_ZP_UJY - 2.5 * np.log10(float(p["snu"]) * fluxerr)
    flux_ref = np.full(len(t), np.nan)
    if "nearestrefmag" in t:
        flux_ref = 10.0 ** (-0.4 * (t["nearestrefmag"].to_numpy(float) - AB_ZP_UJY))
    out = pd.DataFrame({
        "jd": jd, "mjd": jd - 2400000.5, "filter": band, "fcqfid": key,
        "flux_dn": flux_dn, "fluxerr_dn": unc_dn, "zpdiff": t["zpdiff"].to_numpy(float),
        "flux_diff": flux_diff, "baseline": baseline, "flux": flux, "fluxerr": fluxerr, "snr": snr,
        "is_detection": det, "mag": mag, "magerr": magerr, "mag_lim": mag_lim, "flag": flag,
        "is_baseline": base_mask, "flux_ref": flux_ref})
    out.attrs = {**table.attrs, "t_peak": t_peak, "baselines": summary}
    return out
