"""The image pipeline's science, one package per stage.

``instruments`` (cameras; DemoCam with its simulator) -> ``calibrate`` (masters, preprocessing)
-> ``extract`` (background, sources, PSF) -> ``astrometry`` (Gaia excerpts, WCS) ->
``photometry`` (zero points) -> ``reference`` (alignment, coadds) -> ``subtract`` (ZOGY,
Alard-Lupton) -> ``detect`` (candidates, cutouts, measurements, forced photometry) ->
``realbogus`` (scores, braai, training) -> ``alerts`` (AVRO packets, Kafka); ``inject`` (fakes).

Modules here take arrays and tables and write or read their own files; none imports the
database (:mod:`vo.db`), the pipeline (:mod:`vo.pipeline`) or Snakemake.
"""
