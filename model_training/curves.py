"""Training curves: validation mean F1 (eval mode) of runs, from their ``eval_history.jsonl``.

    python -m model_training.curves --runs runs/cmp-mf-256 runs/cmp-m2f-256 --against minutes \
        --out docs/figures/m2f_vs_maskformer.png

``--against epoch`` (what ``model_training.export`` draws for a model's card): the phases of one model, each
continuing the previous one's epoch axis. ``--against minutes``: runs that raced each other on the clock,
each from its own start.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def read_history(history_file: Path) -> list[dict]:
    rows = [json.loads(line) for line in history_file.read_text().splitlines() if line.strip()]
    return [r for r in rows if "eval_mean_f1_foreground" in r]


def training_curve(history_files: list[Path], out_png: Path, against: str = "epoch", ymin: float = 0.0) -> None:
    """Validation mean F1 (and, dashed, upper-lip F1) of each run (run folder), its wall-clock time in the
    legend, against epochs (a phase continues the previous one's axis) or minutes (each from 0). ``ymin``
    raises the F1 axis's lower end, for runs that differ by a point."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.8))
    offset = 0.0
    for path in history_files:
        rows = read_history(path)
        if not rows:
            continue
        xs = [offset + r["epoch"] for r in rows] if against == "epoch" else [r["elapsed_s"] / 60 for r in rows]
        label = f"{path.parent.name} ({rows[-1]['elapsed_s'] / 60:.0f} min)"
        line, = ax.plot(xs, [r["eval_mean_f1_foreground"] for r in rows], "o-", ms=3, label=f"mean F1, {label}")
        lips = [(x, r["eval_f1_u_lip"]) for x, r in zip(xs, rows, strict=True) if "eval_f1_u_lip" in r]
        if lips:  # an epoch whose validation had no upper lip has no point, not a point at 0
            ax.plot(*zip(*lips, strict=True), ".--", lw=1, color=line.get_color(), alpha=0.5)
        offset = xs[-1] if against == "epoch" else 0.0
    ax.axhline(0.72, color="grey", lw=0.8, ls=":")
    ax.set_xlabel(("epoch (phases continue one another)" if against == "epoch" else "training minutes")
                  + "; dashed: F1 u_lip")
    ax.set_ylabel("validation F1 (eval mode)")
    ax.set_ylim(ymin, 1)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    Path(out_png).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", nargs="+", required=True, help="run folders (each with eval_history.jsonl)")
    ap.add_argument("--against", choices=("epoch", "minutes"), default="epoch")
    ap.add_argument("--out", required=True)
    ap.add_argument("--ymin", type=float, default=0.0, help="lower end of the F1 axis")
    args = ap.parse_args(argv)
    histories = [Path(run) / "eval_history.jsonl" for run in args.runs]
    missing = [str(h) for h in histories if not h.is_file()]
    if missing:
        raise SystemExit(f"no evaluation history: {', '.join(missing)}")
    training_curve(histories, Path(args.out), args.against, args.ymin)


if __name__ == "__main__":
    main()
