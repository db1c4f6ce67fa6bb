"""alerts: one exposure's AVRO alerts (candidate, object, previous detections, forced photometry, cutouts); sent to Kafka when configured.

Run by Snakemake (rule alerts) or by hand to debug it: python scripts/alerts.py --help
"""
import sys
from pathlib import Path

# run from a checkout without installing vo (Snakemake copies scripts; __real_file__ is the original)
sys.path.insert(0, str(Path(globals().get("__real_file__", __file__)).resolve().parents[1]))
from vo.pipeline.scripting import rule_main  # noqa: E402

rule_main("alerts", __doc__, globals().get("snakemake"))
