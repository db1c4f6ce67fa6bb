"""Figures and tables for ``snakemake --report``."""

from __future__ import annotations

import numpy as np
import pandas as pd

from vo.io.atomic import atomic_path


def plot_detections(analysis_files: list[str], reduced_files: list[str], out_png: str,
                    max_plots: int = 12) -> int:
    """Plot up to ``max_plots`` light curves with real detections into one PNG; return the count.

    Light curves are shown as flux (uJy) against MJD; each event is a shaded span from
    its start to its end time, with its peak marked.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import h5py

    from vo.io.hdf5 import read_table
    from vo.lightcurves.analysis import read_analysis

    picks = []  # (reduced file, detections of one light curve)
    for a_file, r_file in zip(analysis_files, reduced_files):
        det = read_analysis(a_file).detections
        if len(det) == 0:
            continue
        real = det[~det["simulated"].astype(bool)]
        real = real.reindex(real["peak_snr"].abs().sort_values(ascending=False).index)
        for filekey, rows in real.groupby("filekey", sort=False):
            picks.append((r_file, filekey, rows))
            if len(picks) >= max_plots:
                break
        if len(picks) >= max_plots:
            break
    n = max(len(picks), 1)
    ncol = min(3, n)
    nrow = int(np.ceil(n / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(5 * ncol, 3 * nrow), squeeze=False)
    for ax, (r_file, filekey, rows) in zip(axes.flat, picks):
        with h5py.File(r_file, "r") as f:
            data, _ = read_table(f[filekey])
        ax.errorbar(data["mjd"], data["flux"], data["fluxerr"], fmt=".", ms=3, lw=0.5, color="k")
        for _, ev in rows.iterrows():
            ax.axvspan(ev["time_start"], ev["time_end"], color="C1" if ev["peak_snr"] > 0 else "C0",
                       alpha=0.3)
            ax.axvline(ev["time_peak"], color="C3", lw=0.8)
        ax.set_title(filekey, fontsize=8)
        ax.set_xlabel("MJD")
        ax.set_ylabel("flux (uJy)")
    for ax in list(axes.flat)[len(picks):]:
        ax.axis("off")
        if not picks:
            ax.text(0.5, 0.5, "no real detections", ha="center", va="center")
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=80)
    plt.close(fig)
    return len(picks)


def efficiency_html(efficiency_csv: str, out_html: str, title: str = "Detection efficiency") -> None:
    """Render the efficiency table (CSV) as an HTML page."""
    table = pd.read_csv(efficiency_csv)
    html = (f"<html><head><meta charset='utf-8'><title>{title}</title></head><body>"
            f"<h2>{title}</h2>{table.to_html(index=False, float_format=lambda x: f'{x:.3f}')}"
            "</body></html>")
    with atomic_path(out_html) as tmp:
        tmp.write_text(html)
