"""Command line: every workflow step can be run by hand, e.g.

    python -m profiling provision --model tiny-random --out resources/models/tiny-random
    python -m profiling d1 --settings '{"model": …}' --measurements m.csv --meta meta.json --trace t.json.gz

`--settings` is the JSON slice of the checked config the step depends on (the Snakefile passes it).
Each command lives in the module named in COMMANDS, which defines `add_arguments(parser)` and `cli(args)`; only
the chosen command's module is imported (so `report` does not pay for importing torch).
Errors in the config are printed as one clear message and exit with status 2.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from .config import ConfigError

# command name -> (module, one-line help)
COMMANDS = {
    "provision": ("profiling.model", "convert/build a named model into a safetensors directory"),
    "env": ("profiling.env", "write the hardware/software record (env.json)"),
    "d1": ("profiling.experiments.d1_request", "run the D1 request-anatomy experiment"),
    "analyze-d1": ("profiling.analysis.d1", "summarise D1 measurements and its trace"),
    "d2": ("profiling.experiments.d2_bottlenecks", "run the D2 bottleneck measurements (ceilings, traces)"),
    "analyze-d2": ("profiling.analysis.d2_bottlenecks", "analytic model, roofline and time breakdown for D2"),
    "d3-batching": ("profiling.experiments.d3_batching", "run the D3 static and dynamic batching experiment"),
    "analyze-d3-batching": ("profiling.analysis.d3_batching", "summarise the D3 batching measurements"),
    "d3-kvcache": ("profiling.experiments.d3_kvcache", "run the D3 KV-cache experiment"),
    "analyze-d3-kvcache": ("profiling.analysis.d3_kvcache", "summarise the D3 KV-cache measurements"),
    "report": ("profiling.report.render", "render report.md, index.html, PROGRESS.md, records and figures"),
    "progress": ("profiling.report.progress", "render only PROGRESS.md and progress.html from the artifacts"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
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
