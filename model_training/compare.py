"""Two model folders on the same faces, side by side: the figure of a model upgrade.

    python -m model_training.compare --old runs/v2 --new models/face-parser --test_count 100 \\
        --out docs/figures/old_vs_new.png

Top row: the public-domain astronaut portrait (scikit-image, NASA) and each model's parsing of it.
Below, six test-split faces from the dataset. Their photos and ground truths may not be
redistributed (CelebAMask-HQ licence), so those rows show only what the models predict and,
in red, the pixels each model gets wrong.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from face_parser.modeling import FaceParser
from model_training.evaluate import predict_label_maps
from model_training.metrics import image_f1

ASTRONAUT_FACE = (100, 0, 340, 240)  # x0, y0, x1, y1: framed like an aligned CelebA-HQ face


def astronaut_face(size: int | None = 512) -> np.ndarray:
    """``(size, size, 3)`` uint8 (``None``: the 240 px crop as it is), public domain, from scikit-image."""
    from PIL import Image
    from skimage import data

    x0, y0, x1, y1 = ASTRONAUT_FACE
    face = np.ascontiguousarray(data.astronaut()[y0:y1, x0:x1])
    return face if size is None else np.asarray(Image.fromarray(face).resize((size, size), Image.Resampling.BILINEAR))


def error_map(truth_hw: np.ndarray, pred_hw: np.ndarray) -> np.ndarray:
    """White where right, red where wrong, grey where the truth is 'ignore'."""
    out = np.full((*truth_hw.shape, 3), 255, np.uint8)
    out[(truth_hw != pred_hw) & (truth_hw != 255)] = (220, 30, 30)
    out[truth_hw == 255] = (160, 160, 160)
    return out


def draw(old: FaceParser, new: FaceParser, faces: list[tuple[np.ndarray, np.ndarray]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    palette = new.labels.palette()
    photo = astronaut_face()
    rows = 1 + len(faces)
    fig, axes = plt.subplots(rows, 4, figsize=(10, 2.5 * rows))
    top = [photo] + [palette[predict_label_maps(m, [photo], photo.shape[:2])[0]] for m in (old, new)]
    for ax, im, title in zip(axes[0], top, ["public-domain photo", old.version, new.version], strict=False):
        ax.imshow(im)
        ax.set_title(title, fontsize=8)
    axes[0][3].axis("off")
    for row, (image, truth) in zip(axes[1:], faces, strict=True):
        preds = [predict_label_maps(m, [image], truth.shape)[0] for m in (old, new)]
        cells = [palette[preds[0]], palette[preds[1]], error_map(truth, preds[0]), error_map(truth, preds[1])]
        titles = [f"{m.version}: F {image_f1(truth, p, len(new.labels)):.3f}"
                  for m, p in zip((old, new), preds, strict=True)]
        for ax, im, title in zip(row, cells, titles + ["errors (old)", "errors (new)"], strict=True):
            ax.imshow(im)
            ax.set_title(title, fontsize=8)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    from model_training.datasets.loaders import open_dataset

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--old", required=True, help="model folder")
    ap.add_argument("--new", default="models/face-parser", help="model folder")
    ap.add_argument("--dataset", default="folder", help="folder | celebamask-hq | hf | lapa")
    ap.add_argument("--data_dir", default="../shared/data/celebamask-mini")
    ap.add_argument("--image_column", default="image", help="hf: image column")
    ap.add_argument("--label_column", default="label", help="hf: label-map column")
    ap.add_argument("--val_count", type=int, default=100)
    ap.add_argument("--test_count", type=int, default=100)
    ap.add_argument("--split_seed", type=int, default=0)
    ap.add_argument("--faces", type=int, default=6, help="test-split faces shown (the first ones)")
    ap.add_argument("--out", default="docs/figures/old_vs_new.png")
    args = ap.parse_args(argv)
    old, new = (FaceParser.load(p, device="cpu", dtype="float32") for p in (args.old, args.new))
    _, base, _, indices = open_dataset(args, part="test" if args.test_count else "val")
    draw(old, new, [base[i] for i in indices[: args.faces]], Path(args.out))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
