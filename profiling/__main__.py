"""Command line: every workflow step can be run by hand, e.g.

    python -m profiling provision --model tiny-random --out resources/models/tiny-random
    python -m profiling <phase> --settings '{"model": …}' --measurements m.csv --meta meta.json …
    python -m profiling <phase>_analysis --settings '{…}' --measurements m.csv …
    python -m profiling serve --port 8000

`--settings` is the JSON slice of the checked config the step depends on (the Snakefile passes it).
Each phase of the registry (profiling/phases) gives two commands: `<phase>` (its experiment) and
`<phase>_analysis`. Each command's module defines `add_arguments(parser)` and `cli(args)`; only the chosen
command's module is imported (so `report` does not pay for importing torch).
Errors in the config are printed as one clear message and exit with status 2.
Before any command, the C allocator is set to keep freed memory (profiling/allocator.py).
"""
from __future__ import annotations

import argparse
import importlib
import sys

from . import allocator, phases
from .config import ConfigError

# command name -> (module, one-line help); the phases' commands are added from the registry below.
COMMANDS = {
    "provision": ("profiling.model", "convert/build a named model into a safetensors directory"),
    "env": ("profiling.env", "write the hardware/software record (env.json)"),
    "report": ("profiling.report.render", "render one run's report, progress wall, records and figures"),
    "progress": ("profiling.report.progress", "render only one run's progress wall from its artifacts"),
    "compare": ("profiling.report.compare", "render reports/index.html and the side-by-side comparison of runs"),
    "serve": ("profiling.serving.api.cli", "start the OpenAI-compatible inference service on 127.0.0.1"),
}
for _phase in phases.PHASES:
    COMMANDS[_phase] = (f"profiling.phases.{_phase}.experiment", f"run the {_phase} experiment")
    COMMANDS[f"{_phase}_analysis"] = (f"profiling.phases.{_phase}.analysis", f"analyse the {_phase} measurements")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        allocator.keep_freed_memory()
    except ValueError as error:
        print(f"environment error: {error}", file=sys.stderr)
        return 2
    parser = argparse.ArgumentParser(prog="python -m profiling", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    chosen = None
    for name, (module_name, help_text) in COMMANDS.items():
        subparser = commands.add_parser(name, help=help_text)
        if argv and argv[0] == name:
            chosen = importlib.import_module(module_name)
            chosen.add_arguments(subparser)
    args = parser.parse_args(argv)
    try:
        chosen.cli(args)
    except ConfigError as error:
        print(f"config error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
