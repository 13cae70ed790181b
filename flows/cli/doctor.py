"""`sftflow doctor [--calibrate] [--json]`: what this machine is to sftflow: its CPU (and the bf16 units it has),
cores, GPU, memory budget, and how `precision: auto` chose for each kind of model work (tasks/calibrate.py)."""
from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("doctor", help="this machine: CPU, bf16 units, memory budget, and what precision auto "
                                           "picks for each kind of model work, with its timings")
    parser.add_argument("--calibrate", action="store_true",
                        help="measure every kind of model work now (else: what earlier runs measured)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from flows.cli.output import emit
    from storage.memory import budget_gb, cgroup_limit_gb, physical_gb
    from tasks.calibrate import KINDS, cache_file, calibrate, machine, recorded
    from tasks.device import cpu_bf16_flags, pick_device

    device = pick_device()
    if args.calibrate:
        for kind in KINDS:
            calibrate(kind, device, force=True)
    budget, source = budget_gb()
    found = recorded()
    report = {"machine": machine(), "cpu_bf16_flags": list(cpu_bf16_flags()), "device": device,
              "memory": {"physical_gb": round(physical_gb(), 1), "cgroup_limit_gb": cgroup_limit_gb(),
                         "budget_gb": round(budget, 1), "budget_from": source},
              "calibration_file": str(cache_file()),
              "precision_auto": {name: {**asdict(c), "reason": c.reason} for name, c in found.items()}}
    lines = [f"cpu: {report['machine']['cpu']} ({report['machine']['cores']} cores), bf16 units: "
             f"{', '.join(report['cpu_bf16_flags']) or 'none'}; gpu: {report['machine']['gpu'] or 'none'}",
             f"memory: {report['memory']['budget_gb']} GB budget ({source}); physical "
             f"{report['memory']['physical_gb']} GB", f"calibrations: {report['calibration_file']}"]
    for kind in KINDS:
        measured = found.get(f"{kind}@{device}")
        lines.append(f"  {kind:<18} " + (f"{measured.choice:<5} {measured.reason} ({measured.measured})" if measured
                                        else "not measured yet (the first run that needs it measures it; or "
                                             "--calibrate)"))
    if not report["cpu_bf16_flags"] and device == "cpu":
        lines.append("  this CPU has no bf16 units: auto is fp32 everywhere, nothing to measure")
    emit(report, args.json, "\n".join(lines))
    return 0
