"""Base class of the observatories: the survey-independent download and reduce logic."""

from __future__ import annotations

import pandas as pd

from vo.lightcurves import reduce as vreduce


class VirtualObservatory:
    """A survey: fetch raw photometry per target, store it, reduce it to light curves.

    Subclasses implement :meth:`fetch_data_from_observatory` and :meth:`to_standard`.

    Parameters
    ----------
    name : observatory name (upper case), e.g. ``"ZTF"``.
    pars : the observatory's config section (``cfg[name]``) with ``reducer`` and
        ``download`` sub-sections.
    data_root : root of the data folder (raw stores live in ``{data_root}/{name}/``).
    """

    name = "BASE"

    def __init__(self, pars: dict, data_root=None):
        self.pars = pars
        self.data_root = data_root

    @classmethod
    def from_config(cls, cfg: dict):
        from vo.config import data_root
        return cls(cfg[cls.name], data_root(cfg))

    # -- download --------------------------------------------------------------------
    def download_params(self) -> dict:
        """Parameters that determine the raw data of a source (a change triggers a re-download)."""
        return {k: v for k, v in self.pars.items() if k not in ("reducer", "download")}

    def fetch_data_from_observatory(self, cat_row: dict) -> tuple[pd.DataFrame, dict]:
        """Raw photometry table and metadata (``altdata``) of one target."""
        raise NotImplementedError

    # -- reduce ----------------------------------------------------------------------
    def to_standard(self, raw: pd.DataFrame) -> pd.DataFrame:
        """Map the survey's raw table to :data:`vo.lightcurves.reduce.STANDARD_COLUMNS`."""
        raise NotImplementedError

    def reduce_source(self, raw: pd.DataFrame, cat_row: dict) -> list:
        """Light curves (one per season and filter) of one target's raw photometry."""
        return vreduce.make_lightcurves(self.to_standard(raw), cat_row, self.pars["reducer"], self.name)
