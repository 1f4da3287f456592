"""Command line: every workflow step can be run by hand, e.g.

    python -m profiling provision --model tiny-random --out resources/models/tiny-random
    python -m profiling d1 --settings '{"model": …}' --measurements m.csv --meta meta.json --trace t.json.gz

`--settings` is the JSON slice of the checked config the step depends on (the Snakefile passes it).
Errors in the config are printed as one clear message and exit with status 2.
"""
from __future__ import annotations

import argparse
import json
import sys

from .config import ConfigError


def _settings(text: str) -> dict:
    return json.loads(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m profiling", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("provision", help="convert/build a named model into a safetensors directory")
    p.add_argument("--model", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)

    p = commands.add_parser("env", help="write the hardware/software record (env.json)")
    p.add_argument("--settings", type=_settings, required=True)
    p.add_argument("--out", required=True)

    p = commands.add_parser("d1", help="run the D1 request-anatomy experiment")
    p.add_argument("--settings", type=_settings, required=True)
    p.add_argument("--measurements", required=True)
    p.add_argument("--meta", required=True)
    p.add_argument("--trace", required=True)

    p = commands.add_parser("analyze-d1", help="summarise D1 measurements and its trace")
    p.add_argument("--settings", type=_settings, required=True)
    p.add_argument("--measurements", required=True)
    p.add_argument("--trace", required=True)
    p.add_argument("--summary", required=True)
    p.add_argument("--operators", required=True)
    p.add_argument("--findings", required=True)

    p = commands.add_parser("report", help="render report.md, index.html, PROGRESS.md, records and figures")
    p.add_argument("--reports", default="reports", help="the reports/ directory to read and write")

    p = commands.add_parser("progress", help="render only PROGRESS.md and progress.html from the artifacts")
    p.add_argument("--reports", default="reports")

    args = parser.parse_args(argv)
    try:
        if args.command == "provision":
            from .model import provision

            provision(args.model, args.out, seed=args.seed)
        elif args.command == "env":
            from . import env
            from .config import apply_threads, resolve_precision
            from .io import staged, write_json

            record = env.collect(resolve_precision(args.settings), apply_threads(args.settings))
            with staged(args.out) as (tmp,):
                write_json(tmp, record)
        elif args.command == "d1":
            from .experiments import d1_request

            d1_request.run(args.settings, args.measurements, args.meta, args.trace)
        elif args.command == "analyze-d1":
            from .analysis import d1

            d1.analyze(args.settings, args.measurements, args.trace, args.summary, args.operators, args.findings)
        elif args.command == "report":
            from .report import render

            render.render_all(args.reports)
        elif args.command == "progress":
            from .report import render

            render.render_progress(args.reports)
    except ConfigError as error:
        print(f"config error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
