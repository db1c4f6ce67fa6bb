"""Benchmark: the PSF model on the six real DECam stamps (../shared/data/real/decam_stamps/).

For each stamp (read as :func:`tests/decam_stamps.load_stamp` does: e-, noise from the sky RMS
plus the sources' Poisson noise, saturation and cosmic rays flagged) runs
:func:`vo.images.extract.extract` and prints:

* the model's FWHM at the centre, the median FWHM of the bright unsaturated stars each fitted
  on its own (free elliptical Moffat, S/N >= 50, the PSF candidates before any rejection), their
  ratio (bar: within 5%), the model's own check (``fwhm_ratio``, ``ok``) and stars used / candidates;
* the median over bright unflagged stars (S/N > 50) of the PSF flux over the aperture flux
  corrected by the model's encircled fraction, for apertures of 1 and 3 FWHM (bar: within 2%);
* the extraction time (wall, s).

    .venv/bin/python benchmarks/psf_real.py [--data ../shared/data/real/decam_stamps]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from decam_stamps import STAMPS, load_stamp  # noqa: E402
from vo.images.extract import extract  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "real" / "decam_stamps")
    args = ap.parse_args(argv)
    print(f"{'stamp':11s} {'model':>6s} {'stars':>6s} {'ratio':>6s} {'check':>6s} ok  used "
          f"{'psf/ap1':>8s} {'psf/ap3':>8s} {'time s':>7s}")
    worst_w, worst_f = 0.0, 0.0
    for name in STAMPS:
        image = load_stamp(name, args.data)
        t0 = time.perf_counter()
        ex = extract(image)
        dt = time.perf_counter() - t0
        s = ex.psf.stars
        cand = np.asarray(s["ok"], bool) & (np.asarray(s["snr"]) >= 50)
        star = float(np.median(s["fwhm"][cand]))
        src = ex.sources
        bright = (src["snr"] > 50) & (src["flags"] == 0)
        ratios = [float(np.median(src["flux_psf"][bright] * ex.psf.encircled(r) / src[c][bright]))
                  for c, r in (("flux_aper", src.meta["APER_R"]), ("flux_aper_big", src.meta["APER_RB"]))]
        w = ex.psf.fwhm() / star
        worst_w = max(worst_w, abs(w - 1))
        worst_f = max(worst_f, *(abs(r - 1) for r in ratios))
        print(f"{name:11s} {ex.psf.fwhm():6.3f} {star:6.3f} {w:6.3f} {ex.psf.fwhm_ratio:6.3f} "
              f"{'y' if ex.psf.ok else 'n':2s} {int(np.sum(s['used'])):2d}/{len(s):<2d} "
              f"{ratios[0]:8.4f} {ratios[1]:8.4f} {dt:7.3f}")
    print(f"worst |model/stars FWHM - 1| = {worst_w:.3f} (bar 0.05); worst |PSF/aperture - 1| = "
          f"{worst_f:.4f} (bar 0.02)")
    return 0 if worst_w <= 0.05 and worst_f <= 0.02 else 1


if __name__ == "__main__":
    raise SystemExit(main())
