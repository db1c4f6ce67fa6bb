"""The pipeline layer: what each rule reads and writes, the rule bodies, the rule scripts' entry
point and ``vo status``.  It joins the science packages (``vo.images``, ``vo.lightcurves``,
``vo.catalog``) to the files (:mod:`vo.paths`) and the database (:mod:`vo.db`); the science
packages import none of it."""
