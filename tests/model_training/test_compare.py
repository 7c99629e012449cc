"""The old-versus-new figure: drawn from two model folders, errors marked where they are."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from face_parser.modeling import FaceParser
from model_training.compare import draw, error_map, main
from tests.conftest import draw_face


def test_error_map_marks_wrong_pixels_only():
    truth = np.array([[1, 2], [255, 3]], np.uint8)
    pred = np.array([[1, 0], [0, 3]], np.uint8)
    out = error_map(truth, pred)
    assert tuple(out[0, 0]) == (255, 255, 255) and tuple(out[0, 1]) == (220, 30, 30)
    assert tuple(out[1, 0]) == (160, 160, 160) and tuple(out[1, 1]) == (255, 255, 255)


def test_figure_is_drawn(tiny_model_dir, tmp_path):
    parser = FaceParser.load(tiny_model_dir, device="cpu", dtype="float32")
    out = tmp_path / "fig.png"
    draw(parser, parser, [draw_face(64, seed=i) for i in range(2)], out)
    assert out.stat().st_size > 10_000


def test_the_figure_draws_test_faces_of_a_hugging_face_dataset(tiny_model_dir, tmp_path):
    datasets = pytest.importorskip("datasets")
    pairs = [draw_face(48, seed=i) for i in range(5)]
    datasets.Dataset.from_dict({"img": [Image.fromarray(p[0]) for p in pairs],
                                "seg": [Image.fromarray(p[1]) for p in pairs]}).save_to_disk(str(tmp_path / "hf"))
    out = tmp_path / "fig.png"
    main(["--old", tiny_model_dir, "--new", tiny_model_dir, "--dataset", "hf", "--data_dir", str(tmp_path / "hf"),
          "--image_column", "img", "--label_column", "seg", "--val_count", "1", "--test_count", "2", "--faces", "2",
          "--out", str(out)])
    assert out.stat().st_size > 10_000
