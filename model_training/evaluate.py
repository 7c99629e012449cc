"""Evaluate a model folder: per-image F, pooled per-class F1 / IoU with 95% bootstrap intervals, a bar
chart, a confusion matrix and an overlay grid.

    python -m model_training.evaluate --model models/face-parser \
        --data_dir ../shared/data/celebamask-mini --test_count 100 --val_count 100 --split test \
        --out reports/eval-test [--paired_with reports/eval-old/per_image_confusion.npz]

Each photo's confusion matrix is kept (``per_image_confusion.npz``), so that a later evaluation of another
model on the same photos can say whether it is better by more than chance (``--paired_with``).

Predictions are made exactly as the service makes them (shared preprocessing
and post-processing), at the label maps' own resolution (512 for CelebAMask-HQ).
Score the test split once per candidate model; choose checkpoints on ``--split val``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from face_parser.modeling import FaceParser
from face_parser.postprocess import label_map
from model_training.metrics import ConfusionMatrix, PerImageF, bootstrap_intervals, paired_differences

# the figures printed after an evaluation and an export
HEADLINE = ("per_image_f", "mean_f1_foreground", "mean_f1_all", "mean_iou", "classes_never_predicted")


def predict_label_maps(parser: FaceParser, images_hwc: Sequence[np.ndarray], size: tuple[int, int],
                       flip: bool = False, extra_sizes: Sequence[int] = ()) -> np.ndarray:
    """``(B, H, W)`` uint8 label maps for a batch of photos, at ``size`` (``flip``, ``extra_sizes``: test-time
    augmentation, see ``FaceParser.score_images``)."""
    return label_map(torch.stack(parser.score_images(images_hwc, flip, extra_sizes)), size=size).numpy()


def evaluate_parser(parser: FaceParser, dataset, indices: Sequence[int], batch_size: int = 8,
                    keep: int = 6, flip: bool = False,
                    extra_sizes: Sequence[int] = ()) -> tuple[dict, list[tuple[np.ndarray, np.ndarray, np.ndarray]]]:
    """Scores over ``indices`` (``report["per_image_confusion"]``: each photo's matrix, ``(N, K, K)``) and the
    first ``keep`` (image, truth, prediction) triples."""
    cm, per_image = ConfusionMatrix(len(parser.labels)), PerImageF(len(parser.labels))
    kept, matrices = [], []
    for start in tqdm(range(0, len(indices), batch_size), desc="evaluate"):
        pairs = [dataset[i] for i in indices[start:start + batch_size]]
        for image, truth in pairs:  # photos may differ in size: predict each at its own
            pred = predict_label_maps(parser, [image], truth.shape, flip, extra_sizes)[0]
            one = ConfusionMatrix(len(parser.labels))
            one.update(truth, pred)
            matrices.append(one.matrix)
            cm.matrix += one.matrix
            per_image.update_matrix(one.matrix)
            if len(kept) < keep:
                kept.append((image, truth, pred))
    report = cm.scores(list(parser.labels.names))
    per_image_confusion = np.stack(matrices)
    report.update({"per_image_f": per_image.value, "ci95": bootstrap_intervals(per_image_confusion),
                   "model_version": parser.version, "images": len(indices),
                   "confusion": np.round(cm.normalised(), 4).tolist(), "per_image_confusion": per_image_confusion})
    return report, kept


def per_class_chart(report: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(n, v["f1"], v["iou"]) for n, v in report["per_class"].items() if v["pixels"] and n != "background"]
    names, f1, iou = zip(*rows, strict=True)
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(10, 4))
    ax.bar(x - 0.2, [v or 0 for v in f1], 0.4, label="F1")
    ax.bar(x + 0.2, [v or 0 for v in iou], 0.4, label="IoU")
    ax.axhline(report["mean_f1_foreground"], color="k", ls="--", lw=1,
               label=f"mean F1 {report['mean_f1_foreground']:.3f}")
    ax.set_xticks(x, names, rotation=45, ha="right")
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.legend(loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def confusion_chart(report: dict, names: Sequence[str], path: Path, title: str) -> None:
    """Row-normalised confusion matrix: which classes are taken for which (left/right, hair/hat, neck/skin)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matrix = np.asarray(report["confusion"])
    fig, ax = plt.subplots(figsize=(8.5, 7.5))
    image = ax.imshow(matrix, cmap="viridis", norm=matplotlib.colors.PowerNorm(0.4, vmin=0, vmax=1))
    for t, p in zip(*np.nonzero(matrix >= 0.02), strict=True):
        ax.text(p, t, f"{matrix[t, p]:.2f}"[1:] if matrix[t, p] < 1 else "1", ha="center", va="center",
                fontsize=6, color="w" if matrix[t, p] < 0.5 else "k")
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("ground truth (rows sum to 1)")
    ax.set_title(title, fontsize=10)
    fig.colorbar(image, ax=ax, shrink=0.8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def overlay_row(image_hwc: np.ndarray, truth_hw: np.ndarray, pred_hw: np.ndarray, palette: np.ndarray,
                height: int, alpha: float) -> np.ndarray:
    """photo | ground truth overlay | prediction overlay, ``(height, 3 * W, 3)`` uint8, the photo scaled to
    ``height`` with its aspect kept. Label maps are resized nearest: interpolated class ids would be other classes."""
    from PIL import Image

    size = (max(1, round(image_hwc.shape[1] * height / image_hwc.shape[0])), height)
    photo = np.asarray(Image.fromarray(image_hwc).resize(size, Image.Resampling.BILINEAR), dtype=np.float32)
    panels = [photo]
    for labels_hw in (truth_hw, pred_hw):
        resized = np.asarray(Image.fromarray(labels_hw).resize(size, Image.Resampling.NEAREST))
        panels.append(photo * (1 - alpha) + palette[resized] * alpha)
    return np.concatenate(panels, axis=1).astype(np.uint8)


def overlay_grid(triples, palette: np.ndarray, path: Path, alpha: float = 0.55, row_height: int = 256) -> None:
    """One :func:`overlay_row` per (image, truth, prediction) triple. Photos may differ in size (LaPa, any
    folder): every row has one height, and narrower rows are padded white to the widest."""
    from PIL import Image

    rows = [overlay_row(image, truth, pred, palette, row_height, alpha) for image, truth, pred in triples]
    width = max(row.shape[1] for row in rows)
    grid = np.concatenate([np.pad(row, ((0, 0), (0, width - row.shape[1]), (0, 0)), constant_values=255)
                           for row in rows])
    Image.fromarray(grid).save(path)


def write_report(report: dict, triples, palette, out_dir: Path, title: str) -> None:
    """``report.json`` and the pictures; each photo's confusion matrix apart, in ``per_image_confusion.npz``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    report = dict(report)
    np.savez_compressed(out_dir / "per_image_confusion.npz", matrices=report.pop("per_image_confusion"))
    (out_dir / "report.json").write_text(json.dumps(report, indent=2))
    per_class_chart(report, out_dir / "per_class.png", title)
    confusion_chart(report, list(report["per_class"]), out_dir / "confusion.png", title)
    if triples:
        overlay_grid(triples, palette, out_dir / "overlays.png")


def add_scoring_arguments(ap: argparse.ArgumentParser) -> None:
    """The model, the held-out photos and the test-time augmentation: shared with ``model_training.calibrate``."""
    ap.add_argument("--model", default="models/face-parser", help="model folder (or hub id when online)")
    ap.add_argument("--dataset", default="folder", help="folder | celebamask-hq | hf | lapa")
    ap.add_argument("--data_dir", default="../shared/data/celebamask-mini")
    ap.add_argument("--val_count", type=int, default=100)
    ap.add_argument("--test_count", type=int, default=0, help="pairs held out as the test split")
    ap.add_argument("--split_seed", type=int, default=0)
    ap.add_argument("--fix_lr_convention", action="store_true",
                    help="swap left/right ids of ground-truth masks that use the reversed convention first")
    ap.add_argument("--flip", action="store_true",
                    help="average each photo's scores with its mirror image's (test-time augmentation)")
    ap.add_argument("--tta_sizes", type=int, nargs="*", default=[], metavar="PX",
                    help="also score each photo at these input sizes and average the log scores "
                         "(test-time augmentation over scales; the service's FACEPARSE_TTA_SIZES)")
    ap.add_argument("--image_column", default="image")
    ap.add_argument("--label_column", default="label")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="float32", choices=("auto", "float32", "float16", "bfloat16"),
                    help="what the forward passes compute in (the service's FACEPARSE_DTYPE)")


def open_scoring(args: argparse.Namespace, part: str):
    """``(parser, dataset, indices)`` for :func:`add_scoring_arguments`' options: a bad ``--model`` exits with
    a message naming it; ``--fix_lr_convention`` swaps the reversed masks back and says how many."""
    from model_training.datasets.base import DatasetError
    from model_training.datasets.loaders import open_dataset
    from model_training.datasets.lr_convention import ConventionFixed, find_reversed

    try:
        parser = FaceParser.load(args.model, device=args.device, dtype=args.dtype)
    except (OSError, ValueError) as exc:  # not a model folder, a hub id while offline, a bad calibration
        sys.exit(f"--model {args.model}: {exc}")
    try:
        _, base, _, indices = open_dataset(args, part=part)
    except DatasetError as exc:
        sys.exit(f"--data_dir {args.data_dir}: {exc}")
    if not indices:  # a folder's test split is held out only by --test_count
        sys.exit(f"the {part} split of {args.data_dir} is empty: give --test_count / --val_count as the model's "
                 "run held them out")
    if args.fix_lr_convention:
        base = ConventionFixed(base, find_reversed(base, indices))
        print(f"left/right convention: {len(base.reversed)} of {len(indices)} ground-truth masks swapped")
    return parser, base, indices


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_scoring_arguments(ap)
    ap.add_argument("--split", choices=("val", "test"), default="val", help="which held-out part to score")
    ap.add_argument("--out", default="reports/eval")
    ap.add_argument("--no_calibration", action="store_true",
                    help="ignore the model folder's class log-biases (model_training.calibrate): the raw model")
    ap.add_argument("--paired_with", default=None, metavar="NPZ",
                    help="another model's per_image_confusion.npz on the same split: report the differences "
                         "with paired 95%% bootstrap intervals")
    args = ap.parse_args(argv)
    other = np.load(args.paired_with)["matrices"] if args.paired_with else None  # a wrong path fails before the work
    parser, base, indices = open_scoring(args, args.split)
    if args.no_calibration:
        parser.class_log_bias = None
    report, triples = evaluate_parser(parser, base, indices, flip=args.flip, extra_sizes=args.tta_sizes)
    report.update({"split": args.split, "lr_convention_fixed": args.fix_lr_convention, "flip": args.flip,
                   "tta_sizes": args.tta_sizes, "class_calibration": parser.class_log_bias is not None,
                   "dtype": str(parser.dtype).removeprefix("torch.")})
    if other is not None:
        try:
            report["paired_with"] = {"file": args.paired_with,
                                     **paired_differences(report["per_image_confusion"], other)}
        except ValueError as exc:
            raise SystemExit(f"--paired_with {args.paired_with}: {exc}") from None
    write_report(report, triples, parser.labels.palette(), Path(args.out),
                 f"{parser.version}: {args.split} split, {len(indices)} pairs")
    print(json.dumps({k: report[k] for k in (*HEADLINE, "ci95", "paired_with") if k in report}))
    return report



if __name__ == "__main__":
    main()
