"""virtualobserver's README session, call by call, against the offline demo survey.

    .venv/bin/python docs/tutorial_virtualobserver.py [DATA_ROOT]

Each section is a section of virtualobserver's README ("Usage examples", "Using the data");
the comments say where ``vo`` differs (DEMO instead of ZTF: no network; ``Session(cfg=...)``
where virtualobserver's ``Session()`` read its one config). ``tests/core/test_tutorial.py``
runs it. Prints what it did; exits non-zero if a call does not do what the README says.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import sqlalchemy as sa

EXTENSION = '''
from vo.lightcurves.analysis import Analysis


class NewAnalysis(Analysis):
    def run(self, lcs):
        result = super().run(lcs)
        result.summary["new_analysis_key"] = self.custom["new_analysis_key"]
        return result
'''


def main(root: Path) -> dict:
    import matplotlib
    matplotlib.use("Agg")
    from vo.catalog import Catalog
    from vo.db import DetectionInTime, Lightcurve, RawPhotometry, Session, Source
    from vo.lightcurves.observatories.demo import VirtualDemoObs
    from vo.project import Project

    done = {}
    db = f"sqlite:///{root}/vo.sqlite"

    # -- Full analysis pipeline ------------------------------------------------------------
    proj = Project(
        name="default_test",                         # must give a name to each project
        version_control=False,
        obs_names=["DEMO"],                          # the simulated survey (ZTF needs the network)
        analysis_kwargs={"snr_threshold": 5.0},
        catalog_kwargs={"default": "demo", "max_targets": 16},
        obs_kwargs={"reducer": {"radius": 3, "gap": 40}},
        DEMO={"reducer": {"gap": 40}},
        data_root=str(root), database_kwargs={"url": db})
    proj.run(cores=2)                                # download, reduce, analyse, ingest: backfills
    done["run"] = True

    # -- Config files and constructor arguments ----------------------------------------------
    cfg_file = root / "project_name.yaml"
    cfg_file.write_text("project:\n  project:\n    name: from_file\n  analysis:\n    snr_threshold: 6.0\n")
    from_file = Project(name="project_name", cfg_file=str(cfg_file), cfg_key="project")
    assert from_file.pars.analysis.snr_threshold == 6.0
    done["cfg_file"] = True

    # -- Using custom code and arguments -------------------------------------------------------
    (root / "extensions").mkdir(exist_ok=True)
    (root / "extensions" / "my_analysis.py").write_text(EXTENSION)
    custom = Project(name="default_test", analysis_kwargs={"new_analysis_key": "new_analysis_value"},
                     analysis_module=str(root / "extensions" / "my_analysis.py"), analysis_class="NewAnalysis",
                     cfg_file=None)
    assert custom.cfg["analysis"]["custom"] == {"new_analysis_key": "new_analysis_value"}
    done["custom_analysis"] = True

    # -- Downloading data ---------------------------------------------------------------------------
    obs = proj.observatories["DEMO"]                 # can also use observatories[0]
    obs.pars.num_threads_download = 0                # can use higher values for multi-threading
    obs.download_all_sources(0, 12, save=True)       # the first 12 sources of the catalog
    assert len(obs.sources) == 12 and len(obs.datasets) == 12
    done["download_all_sources"] = len(obs.datasets)

    # -- Loading a catalog ------------------------------------------------------------------------
    cat = Catalog(default="demo")                    # "WD" downloads Gentile Fusillo et al. 2021
    cat.load()
    done["catalog"] = len(cat.data)

    # -- Reducing lightcurves -----------------------------------------------------------------------
    obs2 = VirtualDemoObs(name="DEMO", reducer={"gap": 60})
    data = RawPhotometry(filename=str(obs.datasets[0].get_fullname()), filekey=obs.datasets[0].filekey)
    data.load()
    obs2.pars.reducer = {"gap": 60}
    lcs = obs2.reduce(data, to="lcs")
    assert lcs and all(lc.attrs["source_name"] == data.attrs["cat_row"]["name"] for lc in lcs)
    done["reduce"] = len(lcs)

    # -- Working with the database -----------------------------------------------------------------
    session = Session(cfg=proj.cfg)                  # virtualobserver's Session() read its one config
    sources = session.scalars(sa.select(Source)).all()
    source = session.scalars(sa.select(Source).where(Source.name == sources[0].name)).first()
    assert source is sources[0]
    names = [s.name for s in sources]
    session.close()

    with Session(cfg=proj.cfg) as session:
        source = session.scalars(sa.select(Source).where(Source.name == names[1])).first()
        source_id = source.id
        data = source.raw_data[0]
        lcs = obs.reduce(data, to="lcs")
        for lc in lcs:
            lc.save()                                # into the project's reduced file of the bin
            session.add(lc)
        session.commit()
        done["db_reduce_save_add"] = len(lcs)

    # -- loading data from disk --------------------------------------------------------------------
    with Session(cfg=proj.cfg) as session:
        raw_data = session.scalars(sa.select(RawPhotometry).where(RawPhotometry.source_name == names[2])).first()
        mag_array = raw_data.data["mag"]
        raw_data.plot()
        raw_data.save()
        assert raw_data.get_fullname() == root / raw_data.filename and raw_data.filekey
        lc = session.scalars(sa.select(Lightcurve).where(Lightcurve.source_id == raw_data.source_id)).first()
        lc.save()
        lc.plot()
        done["load_from_disk"] = (len(mag_array), lc.filekey)

        data = session.scalars(sa.select(RawPhotometry).where(RawPhotometry.source_id == source_id)).first()
        data.delete_data_from_disk()
        session.delete(data)
        session.commit()
        done["delete"] = True

    # -- Existing data -----------------------------------------------------------------------------
    store = obs.datasets[0].get_fullname()
    done["populate_sources"] = len(obs.populate_sources(store))

    # -- Analysis results ----------------------------------------------------------------------------
    with Session(cfg=proj.cfg) as session:
        done["detections"] = len(session.scalars(sa.select(DetectionInTime)).all())
    return done


if __name__ == "__main__":
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="vo-tutorial-"))
    for key, value in main(root.resolve()).items():
        print(f"{key:24s} {value}")
