"""The figure of docs/maskformer.md: the shipped model's real outputs on a public-domain face.

    python -m scripts.maskformer_figure --out docs/figures/maskformer_outputs.png

The photo is NASA's astronaut portrait that scikit-image ships (public domain), cropped
to the framing of an aligned CelebAMask-HQ face. It prints the tensor shapes it shows.
"""

from __future__ import annotations

import argparse

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

from face_parser.modeling import FaceParser
from face_parser.postprocess import class_probabilities, label_map, resized, semantic_scores
from face_parser.preprocess import resize_rgb, to_pixel_values
from model_training.compare import astronaut_face

SHOWN_CLASSES = ("skin", "hair", "u_lip", "l_lip")


def run_model(parser: FaceParser, photo: np.ndarray):
    pixel_values = to_pixel_values([resize_rgb(photo, parser.preprocess.size)], parser.preprocess)
    with torch.no_grad():
        out = parser.model(pixel_values=pixel_values, pixel_mask=torch.ones_like(pixel_values[:, 0], dtype=torch.long))
    return pixel_values, out


def face_parts_window(ids: np.ndarray, labels, pad: int = 12) -> tuple[slice, slice]:
    """The box around the eyes, brows and lips in a label map: where resizing decides the most pixels."""
    parts = np.isin(ids, [labels.names.index(n) for n in ("l_eye", "r_eye", "l_brow", "r_brow", "u_lip", "l_lip")])
    ys, xs = np.nonzero(parts)
    return (slice(max(0, ys.min() - pad), ys.max() + pad), slice(max(0, xs.min() - pad), xs.max() + pad))


def draw(photo, out, labels, path: str) -> None:
    cls = out.class_queries_logits[0].float().softmax(-1).numpy()  # (Q, K+1)
    masks = out.masks_queries_logits[0].float().sigmoid().numpy()  # (Q, h, w)
    scores = semantic_scores(out.class_queries_logits, out.masks_queries_logits)
    probs = class_probabilities(scores, size=photo.shape[:2])[0].numpy()
    ids = label_map(scores, size=photo.shape[:2])[0].numpy()
    palette = np.array(labels.palette(), dtype=np.uint8).reshape(-1, 3)
    stock_ids = resized(scores, photo.shape[:2]).argmax(1)[0].numpy()  # what the stock post-processing answers

    fig = plt.figure(figsize=(15, 11))
    grid = fig.add_gridspec(3, 6, height_ratios=(1, 1, 1.5))
    ax = fig.add_subplot(grid[0, 0])
    ax.imshow(photo)
    ax.set_title("input photo")
    ax.axis("off")
    ax = fig.add_subplot(grid[0, 1:3])
    ax.imshow(cls, cmap="viridis", aspect="auto", vmin=0, vmax=1)
    ax.set_title(f"class_queries_logits, softmax {tuple(out.class_queries_logits.shape)}", fontsize=9)
    ax.set_xticks(range(len(labels.names) + 1), [*labels.names, "no obj"], rotation=90, fontsize=6)
    ax.set_yticks(range(cls.shape[0]), [f"q{q}" for q in range(cls.shape[0])], fontsize=6)
    for i, name in enumerate(SHOWN_CLASSES):
        k = labels.names.index(name)
        q = int(cls[:, k].argmax())
        ax = fig.add_subplot(grid[0, 3 + i % 3] if i < 3 else grid[1, 0])
        ax.imshow(masks[q], cmap="magma", vmin=0, vmax=1)
        ax.set_title(f"sigmoid(mask q{q}) -> {name} {cls[q, k]:.2f}\n{masks.shape[1]}x{masks.shape[2]}", fontsize=8)
        ax.axis("off")
    for i, name in enumerate(("hair", "u_lip", "l_lip")):
        ax = fig.add_subplot(grid[1, 1 + i])
        ax.imshow(probs[labels.names.index(name)], cmap="magma", vmin=0, vmax=1)
        ax.set_title(f"P({name}) at photo size", fontsize=9)
        ax.axis("off")
    ax = fig.add_subplot(grid[1, 4])
    ax.imshow(palette[ids])
    ax.set_title("label map (argmax)")
    ax.axis("off")
    ax = fig.add_subplot(grid[1, 5])
    ax.imshow((0.55 * photo + 0.45 * palette[ids]).astype(np.uint8))
    ax.set_title("overlay")
    ax.axis("off")
    window = face_parts_window(ids, labels)
    grey = np.repeat(photo.mean(axis=-1, keepdims=True), 3, axis=-1)
    differ = np.where((stock_ids != ids)[..., None], palette[ids], grey)
    for i, (title, shown) in enumerate((
            ("scores resized (stock post-processing)", 0.35 * photo + 0.65 * palette[stock_ids]),
            ("log scores resized (ours, face_parser.postprocess)", 0.35 * photo + 0.65 * palette[ids]),
            (f"the {(stock_ids != ids).sum()} pixels that differ, in our classes", differ))):
        ax = fig.add_subplot(grid[2, 2 * i:2 * i + 2])
        ax.imshow(shown[window].astype(np.uint8), interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="models/face-parser")
    ap.add_argument("--out", default="docs/figures/maskformer_outputs.png")
    args = ap.parse_args(argv)
    photo = astronaut_face(size=None)
    parser = FaceParser.load(args.model, device="cpu", dtype="float32")
    pixel_values, out = run_model(parser, photo)
    print("pixel_values", tuple(pixel_values.shape))
    for name in ("class_queries_logits", "masks_queries_logits", "encoder_last_hidden_state",
                 "pixel_decoder_last_hidden_state", "transformer_decoder_last_hidden_state"):
        print(name, tuple(getattr(out, name).shape))
    draw(photo, out, parser.labels, args.out)


if __name__ == "__main__":
    main()
