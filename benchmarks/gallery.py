"""Gallery figure: faces we may publish, each with its parsing and a few lip / hair colours.

    python -m benchmarks.gallery [--model models/face-parser] [--out docs/figures/gallery.png]

Faces: the NASA portrait of Eileen Collins that scikit-image ships (``skimage.data.astronaut()``, public
domain; ``pip install -e '.[bench]'``), cropped to the head, and two cartoon faces drawn by the tests
(``tests.conftest.draw_face``). Never CelebAMask-HQ photos. Each row: original, parsing overlay (the
``/parse?format=color&overlay=true`` rendering), then the colour combinations of
``benchmarks.recolor_quality`` at the ``/recolor`` default intensities, computed by the service's code
(``faces=whole``: every tile is one face).
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from benchmarks.recolor_quality import COMBINATIONS, model_scores, parse_photo
from face_parser.modeling import FaceParser
from face_parser.pipeline import FaceParsing
from service.masks import color_png
from service.recolor import ColorRequest, parse_hex_color, recolor_with_mattes

TILE = 256
HEADER = 22
LIP_INTENSITY, HAIR_INTENSITY = 0.7, 0.8  # the /recolor defaults
ASTRONAUT_HEAD = (100, 0, 350, 250)  # x0, y0, x1, y1: the head and shoulders of the 512x512 portrait


def publishable_faces() -> list[tuple[str, np.ndarray]]:
    """``(caption, (TILE, TILE, 3) uint8 RGB)`` of every face the figure may show."""
    from skimage import data  # the bench extra

    from tests.conftest import draw_face

    head = Image.fromarray(data.astronaut()).crop(ASTRONAUT_HEAD).resize((TILE, TILE), Image.LANCZOS)
    return [("NASA portrait (skimage.data.astronaut)", np.asarray(head)),
            ("drawn face (tests)", draw_face(TILE, seed=3)[0]),
            ("drawn face (tests)", draw_face(TILE, seed=5)[0])]


def overlay(parser: FaceParser, photo_hwc: np.ndarray) -> np.ndarray:
    labels_hw = FaceParsing([model_scores(parser, photo_hwc)], faces=None).label_map(photo_hwc.shape[:2], max_side=2048)
    png = color_png(labels_hw, parser.labels.palette(), photo_hwc, opacity=0.5)
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def row(parser: FaceParser, photo_hwc: np.ndarray) -> list[np.ndarray]:
    _, mattes = parse_photo(parser, photo_hwc)
    tiles = [photo_hwc, overlay(parser, photo_hwc)]
    for lips_hex, hair_hex in COMBINATIONS:
        lips = ColorRequest(parse_hex_color(lips_hex), LIP_INTENSITY)
        hair = ColorRequest(parse_hex_color(hair_hex), HAIR_INTENSITY)
        tiles.append(recolor_with_mattes(photo_hwc, mattes, lips, hair))
    return tiles


def compose(rows: list[list[np.ndarray]], headers: list[str]) -> Image.Image:
    columns = len(headers)
    sheet = Image.new("RGB", (columns * TILE, HEADER + len(rows) * TILE), "white")
    draw = ImageDraw.Draw(sheet)
    for c, text in enumerate(headers):
        draw.text((c * TILE + 6, 5), text, fill="black")
    for r, tiles in enumerate(rows):
        for c, tile in enumerate(tiles):
            sheet.paste(Image.fromarray(tile), (c * TILE, HEADER + r * TILE))
    return sheet


def main(argv: list[str] | None = None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="models/face-parser")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", type=Path, default=Path("docs/figures/gallery.png"))
    args = ap.parse_args(argv)
    parser = FaceParser.load(args.model, device=args.device)
    headers = ["original", "parsing"] + [f"lips {lips}, hair {hair}" for lips, hair in COMBINATIONS]
    sheet = compose([row(parser, photo) for _, photo in publishable_faces()], headers)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out, optimize=True)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB)")
    return args.out


if __name__ == "__main__":
    main()
