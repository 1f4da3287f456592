# Shared by every rule file: the checked config, the command that runs the profiling package, small helpers.
import glob
import json
import os
import sys

sys.path.insert(0, workflow.basedir)

from snakemake.exceptions import WorkflowError

from profiling.config import ConfigError, check_config, experiment_config, resolve_precision, run_config
from profiling.model import provisioned_dir

# Check the whole config (and that the asked-for device exists) before any job starts, so a bad value stops the
# run with a message naming the field, and no finished result is touched.
try:
    CONFIG = check_config(config)
    PRECISION = resolve_precision(CONFIG)
except ConfigError as error:
    raise WorkflowError(f"config error: {error}")

# Each phase's rule file appends the analysis outputs the report reads, and the records the report writes.
REPORT_INPUTS = []
REPORT_RECORDS = []

TEMPLATES = sorted(glob.glob(os.path.join(workflow.basedir, "templates", "**", "*.j2"), recursive=True))

# Every step runs the package with this interpreter; PYTHONPATH lets it run from any working directory.
PROFILING = f"PYTHONPATH={workflow.basedir}${{PYTHONPATH:+:$PYTHONPATH}} {sys.executable} -m profiling"


def settings(experiment=None):
    """The JSON config slice a step depends on (an experiment's section plus the run-wide keys, or the run-wide
    keys alone); a change to it re-runs that step (params trigger)."""
    slice_ = experiment_config(CONFIG, experiment) if experiment else run_config(CONFIG)
    return json.dumps(slice_, sort_keys=True)


def model_files(wildcards=None):
    """The provisioned model directory the experiments need, if the model is one this workflow builds."""
    local = provisioned_dir(CONFIG["model"])
    return [str(local)] if local is not None else []


def measuring_resources():
    """Timing rules hold the whole device: with --cores N they never overlap with another timing rule."""
    return {"gpu": 1 if PRECISION.device == "cuda" else 0, "mem_mb": 4000}
