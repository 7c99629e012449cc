"""Per-class F1 of several evaluations side by side: what a change of model gained and lost, class by class.

    python -m model_training.per_class_chart --reports v3=reports/val-v3/report.json \\
        448px=reports/val-448/report.json --out docs/figures/per_class_448.png

Each report is a ``report.json`` of ``model_training.evaluate`` (or of an export). Bars are the
face classes present in the first report, in its order; the legend gives each pooled mean F1.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def read_reports(pairs: list[str]) -> dict[str, dict]:
    """``NAME=PATH`` pairs -> ``{NAME: report}``, in order; a bad pair or file stops with a message naming it."""
    reports = {}
    for pair in pairs:
        name, sep, path = pair.partition("=")
        if not sep or not name or not path:
            raise SystemExit(f"--reports {pair!r}: write NAME=PATH/report.json")
        try:
            reports[name] = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise SystemExit(f"{path}: cannot read the report ({exc})") from None
        if not isinstance(reports[name], dict) or not {"per_class", "mean_f1_foreground"} <= reports[name].keys():
            raise SystemExit(f"{path}: not a model_training.evaluate report (no per_class / mean_f1_foreground)")
    return reports


def per_class_comparison(reports: dict[str, dict], path: Path, title: str) -> None:
    """Grouped bars: one group per face class, one bar per report."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first = next(iter(reports.values()))
    names = [n for n, v in first["per_class"].items() if v["pixels"] and n != "background"]
    x = np.arange(len(names))
    width = 0.8 / len(reports)
    fig, ax = plt.subplots(figsize=(11, 4))
    for k, (label, report) in enumerate(reports.items()):
        f1 = [report["per_class"].get(n, {}).get("f1") or 0 for n in names]
        ax.bar(x - 0.4 + width * (k + 0.5), f1, width, label=f"{label} (pooled {report['mean_f1_foreground']:.3f})")
    ax.set_xticks(x, names, rotation=45, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel("F1")
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reports", nargs="+", required=True, metavar="NAME=PATH", help="report.json files, in order")
    ap.add_argument("--out", required=True, help="PNG to write")
    ap.add_argument("--title", default="per-class F1")
    args = ap.parse_args(argv)
    per_class_comparison(read_reports(args.reports), Path(args.out), args.title)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
