"""The image pipeline in process: every image rule's files (:func:`rule_io`) and body (``run_<rule>``).

One namespace for notebooks, tests and benchmarks; the rules themselves are listed in
:mod:`vo.steps`.
"""

from vo.pipeline.image_io import *  # noqa: F401,F403
from vo.pipeline.image_steps import *  # noqa: F401,F403
from vo.pipeline.transient_steps import *  # noqa: F401,F403
