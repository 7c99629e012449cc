"""model_training.export --weights_only: the loadable folder without the card (no evaluation photos needed)."""

from __future__ import annotations

import torch

from face_parser.labels import CELEBAMASK_HQ_SCHEME
from face_parser.modeling import FaceParser, build_model, save_model_folder
from face_parser.preprocess import PreprocessConfig
from model_training import export


def test_weights_only_writes_a_loadable_fp16_folder_and_no_card(tmp_path):
    run = save_model_folder(build_model("tiny", CELEBAMASK_HQ_SCHEME, None), PreprocessConfig(size=64),
                            tmp_path / "run", version="run", fp16=False)
    assert export.main(["--checkpoint", str(run), "--out", str(tmp_path / "out"), "--image_size", "64",
                        "--version", "tiny-gpu", "--weights_only"]) == {}
    before = FaceParser.load(run, device="cpu", dtype="float32")
    after = FaceParser.load(tmp_path / "out", device="cpu", dtype="float32")
    assert after.version == "tiny-gpu" and after.preprocess.size == 64
    assert not (tmp_path / "out" / "README.md").exists()
    assert next(after.model.parameters()).dtype == torch.float32  # loaded as asked; stored in fp16:
    stored = {p.name: p.stat().st_size for p in (tmp_path / "out").iterdir()}
    assert stored["model.safetensors"] < 0.6 * (run / "model.safetensors").stat().st_size
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(after.scores(x), before.scores(x), atol=2e-2, rtol=2e-2)
