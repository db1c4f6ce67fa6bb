"""The database: an index of the product files (SQLAlchemy 2.0; SQLite or PostgreSQL).

    import sqlalchemy as sa
    from vo.db import Session, Source, get_engine

    engine = get_engine("sqlite:///data/vo.sqlite")
    with Session(engine) as session:
        source = session.scalars(sa.select(Source).where(Source.name == "J123.1-32.13")).first()
"""

from vo.db import datasets as _datasets  # noqa: F401  (rows that are datasets: load and insert events)
from vo.db.engine import Session, engine_from_config, get_engine, url_from_config, write_engine
from vo.db.migrate import init_db
from vo.db.models import (PSF, Base, CatalogExcerpt, Cutouts, Detection, DetectionInTime, Exposure, Image, Lightcurve,
                          Measurement, ObjectCounter, Provenance, RawPhotometry, Reference, Score, SkyObject,
                          Source, SourceList, Subtraction, WorldCoordinates, ZeroPoint, healpix_index)
from vo.db.objects import associate_measurements, associate_objects
from vo.db.spatial import cone_search

__all__ = ["Base", "CatalogExcerpt", "Cutouts", "Detection", "DetectionInTime", "Exposure", "Image", "Lightcurve", "Measurement",
           "ObjectCounter", "PSF", "Provenance", "RawPhotometry", "Reference", "Score", "Session", "SkyObject",
           "Source", "SourceList", "Subtraction", "WorldCoordinates", "ZeroPoint",
           "associate_measurements", "associate_objects", "cone_search", "engine_from_config", "get_engine", "healpix_index", "init_db",
           "url_from_config", "write_engine"]
