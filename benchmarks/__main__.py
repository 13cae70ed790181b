"""`python -m benchmarks NAME [--json]`: one module per stage in this package, each exposing
`run(args) -> {"benchmark": NAME, "comparisons": [{"name", "ours_s", "baseline_s", "speedup", ...}], ...}`
and optionally `add_arguments(parser)`. Baselines are measured in the same run: these machines are noisy.
"""
from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import sys
from pathlib import Path

from flows.settings import configure_environment

HERE = Path(__file__).resolve().parent


def available() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules([str(HERE)]) if not m.name.startswith("_")
                  and m.name != "common")


def main(argv: list[str] | None = None) -> int:
    configure_environment()
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "--list"):
        print("benchmarks: " + ", ".join(available()))
        return 0
    name = argv[0]
    if name not in available():
        print(f"unknown benchmark {name!r}; available: {', '.join(available())}", file=sys.stderr)
        return 2
    module = importlib.import_module(f"benchmarks.{name}")
    parser = argparse.ArgumentParser(prog=f"python -m benchmarks {name}", description=module.__doc__)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    if hasattr(module, "add_arguments"):
        module.add_arguments(parser)
    args = parser.parse_args(argv[1:])
    result = module.run(args)
    for row in result["comparisons"]:
        row.setdefault("speedup", round(row["baseline_s"] / row["ours_s"], 2) if row.get("ours_s") else None)
    if args.json:
        print(json.dumps(result, default=str))
    else:
        from flows.cli.output import format_table

        columns = list(dict.fromkeys(k for row in result["comparisons"] for k in row))
        print(f"benchmark: {name}")
        print(format_table(result["comparisons"], columns))
        for key, value in result.items():
            if key not in ("benchmark", "comparisons"):
                print(f"{key}: {value}")
    return 0


if __name__ == "__main__":
    from flows.cli import exit_process

    exit_process(main())
