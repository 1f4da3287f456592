# Shared by every rule file: the checked config, the runs it asks for, the command that runs the profiling
# package, and the few helpers rules share. Reading this costs no torch import (the no-op run stays fast).
import glob
import json
import os
import re
import sys

sys.path.insert(0, workflow.basedir)

from snakemake.exceptions import WorkflowError

from profiling import phases as registry
from profiling.config import ConfigError, check_config, phase_config, resolve_precision, run_config
from profiling.model import provisioned_dir
from profiling.runs import plan_runs

# Check the whole config (schema, profile, that every model can be found here and every device exists) before any
# job starts, so a bad value stops the run with a message naming the field, and no finished result is touched.
try:
    CONFIG = check_config(config)
    RUNS = plan_runs(CONFIG)  # {run tag: that run's config}
except ConfigError as error:
    raise WorkflowError(f"config error: {error}")

# Every file a run writes lives under its own directory; {run} is the run tag.
RUN = "reports/runs/{run}"


wildcard_constraints:
    run="|".join(re.escape(tag) for tag in RUNS),


# Each phase's rule file appends what the run's report reads (patterns with {run}) and the records it writes.
REPORT_INPUTS = []
REPORT_RECORDS = []

TEMPLATES = sorted(
    [os.path.join(workflow.basedir, "templates", name) for name in os.listdir(os.path.join(workflow.basedir, "templates"))]
    + [os.path.join(workflow.basedir, "profiling", "phases", phase, name) for phase in registry.PHASES
       for name in os.listdir(os.path.join(workflow.basedir, "profiling", "phases", phase)) if name.endswith(".j2")]
    + [os.path.join(workflow.basedir, "profiling", "phases", name)  # partials shared by phases (energy.md.j2)
       for name in os.listdir(os.path.join(workflow.basedir, "profiling", "phases")) if name.endswith(".j2")]
)

# Every step runs the package with this interpreter; PYTHONPATH lets it run from any working directory.
PROFILING = f"PYTHONPATH={workflow.basedir}${{PYTHONPATH:+:$PYTHONPATH}} {sys.executable} -m profiling"


def settings(phase=None):
    """A params function: the JSON config slice a step of one run depends on (a phase's section plus the run-wide
    keys, or the run-wide keys alone); a change to it re-runs that step (params trigger)."""

    def of_run(wildcards):
        run = RUNS[wildcards.run]
        return json.dumps(phase_config(run, phase) if phase else run_config(run), sort_keys=True)

    return of_run


def model_files(wildcards):
    """The provisioned model directory a run's experiments need, if its model is one this workflow builds."""
    local = provisioned_dir(RUNS[wildcards.run]["model"])
    return [str(local)] if local is not None else []


def phase_file(phase, name):
    """The path pattern of a file in a phase's data directory of a run (for rules that read another phase's data)."""
    return f"{RUN}/data/{phase}/{name}"


def uses_gpu(wildcards):
    return 1 if resolve_precision(RUNS[wildcards.run]).device == "cuda" else 0


# Timing rules hold the whole device: with --cores N they never overlap with another timing rule, and on a
# cluster (workflow/profiles/slurm) each asks for its GPU and memory.
MEASURING_RESOURCES = {"gpu": uses_gpu, "mem_mb": 4000, "runtime": 120}  # runtime: minutes
