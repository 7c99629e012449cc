"""How torch's OpenMP threads should wait: the forward pass quiet and next to a busy neighbour.

    python -m benchmarks.omp_wait [--rounds 3] [--repeats 15] [--neighbour 1]

libgomp's threads spin at the end of each parallel region before they sleep (``GOMP_SPINCOUNT``;
300,000 spins when unset). On a quiet machine that saves a wake-up per operator; when another
process takes one of the cores, the spinning thread holds its core while the thread it waits for
cannot run, and a forward pass takes many times longer. Each setting below runs
``benchmarks.model_speed`` (batch 1) in a fresh process (libgomp reads its environment once), quiet
and then next to ``--neighbour`` cores kept busy at a higher priority (:mod:`benchmarks.neighbour`),
settings interleaved over ``--rounds``; medians over rounds of the per-run medians.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from contextlib import nullcontext

from benchmarks.neighbour import busy_neighbour

SETTINGS = {  # name -> environment
    "libgomp default": {},
    "GOMP_SPINCOUNT=10000": {"GOMP_SPINCOUNT": "10000"},
    "GOMP_SPINCOUNT=1000": {"GOMP_SPINCOUNT": "1000"},
    "OMP_WAIT_POLICY=PASSIVE": {"OMP_WAIT_POLICY": "PASSIVE"},
    "one thread": {"OMP_NUM_THREADS": "1"},
}
WAIT_VARIABLES = ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY", "OMP_NUM_THREADS")


def forward_ms(model: str, repeats: int, env: dict[str, str]) -> float:
    """Batch-1 forward pass, ms (median of ``repeats``), in a fresh process with ``env``."""
    clean = {k: v for k, v in os.environ.items() if k not in WAIT_VARIABLES}
    out = subprocess.run([sys.executable, "-m", "benchmarks.model_speed", "--model", model, "--batches", "1",
                          "--repeats", str(repeats), "--device", "cpu"],
                         env={**clean, **env}, capture_output=True, text=True, check=True).stdout
    return float(json.loads(out.strip().splitlines()[-1])["ms_per_image"]["1"])


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="models/face-parser")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--neighbour", type=int, default=1, metavar="CORES")
    ap.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    args = ap.parse_args(argv)
    runs: dict[str, dict[str, list[float]]] = {name: {"quiet": [], "busy": []} for name in args.settings}
    for index in range(args.rounds):
        for busy in (False, True):
            with busy_neighbour(args.neighbour) if busy else nullcontext():
                for name in args.settings:
                    ms = forward_ms(args.model, args.repeats, SETTINGS[name])
                    runs[name]["busy" if busy else "quiet"].append(ms)
                    print(f"round {index + 1} {'busy' if busy else 'quiet'}: {name}: {ms:.1f} ms", flush=True)
    results = {name: {"quiet_ms": statistics.median(r["quiet"]), "busy_ms": statistics.median(r["busy"]),
                      "runs": r} for name, r in runs.items()}
    print(f"\n{'setting':<26} {'quiet ms':>9} {'busy ms':>9} {'busy/quiet':>10}")
    for name, r in results.items():
        print(f"{name:<26} {r['quiet_ms']:9.1f} {r['busy_ms']:9.1f} {r['busy_ms'] / r['quiet_ms']:10.2f}")
    print(json.dumps({"neighbour_cores": args.neighbour, "results": results}))
    return results


if __name__ == "__main__":
    main()
