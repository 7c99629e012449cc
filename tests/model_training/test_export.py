"""model_training.export: --weights_only (the loadable folder without the card: no evaluation photos needed), and
the card's line for each training phase."""

from __future__ import annotations

import json

import pytest
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


def test_the_input_size_is_the_saved_one_unless_given(tmp_path, capsys):
    """A 96 px run re-exported without --image_size stays 96 px (it used to become 256); a Trainer checkpoint
    takes its run folder's size; a size given on the command line wins, with a note."""
    run = save_model_folder(build_model("tiny", CELEBAMASK_HQ_SCHEME, None), PreprocessConfig(size=96),
                            tmp_path / "run", version="run", fp16=False)
    checkpoint = tmp_path / "run" / "checkpoint-7"
    checkpoint.mkdir()
    for name in ("config.json", "model.safetensors"):
        (checkpoint / name).write_bytes((run / name).read_bytes())
    for source, out in ((run, "a"), (checkpoint, "b")):
        export.main(["--checkpoint", str(source), "--out", str(tmp_path / out), "--weights_only"])
        assert FaceParser.load(tmp_path / out, device="cpu").preprocess.size == 96
    export.main(["--checkpoint", str(run), "--out", str(tmp_path / "c"), "--weights_only", "--image_size", "64"])
    assert FaceParser.load(tmp_path / "c", device="cpu").preprocess.size == 64
    assert "saved at 96 px; exporting at --image_size 64" in capsys.readouterr().out


def test_no_saved_input_size_asks_for_one(tmp_path):
    bare = tmp_path / "bare" / "checkpoint-1"
    bare.mkdir(parents=True)
    with pytest.raises(SystemExit, match="give --image_size"):
        export.input_size([str(bare)], None)
    assert export.input_size([str(bare)], 96) == 96


def write_run(folder, model_args: dict, minutes: float | None = None):
    folder.mkdir()
    args = {"data": {"image_size": 320, "test_count": 100, "val_count": 100, "split_seed": 0},
            "model": {"preset": "small-m2f", "semantic_dice_weight": 1.0, "max_train_minutes": minutes, **model_args},
            "training": {"learning_rate": 3e-4, "lr_scheduler_type": "cosine", "per_device_train_batch_size": 8}}
    (folder / "run_args.json").write_text(json.dumps(args))
    (folder / "eval_history.jsonl").write_text(
        "\n".join(json.dumps({"epoch": e, "elapsed_s": 420.0 * e, "eval_mean_f1_foreground": f})
                  for e, f in [(1, 0.70), (2, 0.74), (3, 0.73)]))
    return folder


def test_the_card_says_where_each_phase_started(tmp_path):
    """A new decoder around a trained backbone is not training from scratch; a run on the clock says so."""
    backbone = write_run(tmp_path / "m2f-256", {"init_backbone_from": "models/face-parser"}, minutes=15)
    whole = write_run(tmp_path / "m2f-320", {"init_from": "runs/m2f-256", "init_backbone_from": ""})
    scratch = write_run(tmp_path / "small", {"preset": "small"})
    assert "a new small-m2f around the backbone of models/face-parser" in export.describe_run(backbone)
    assert "lr 0.0003 cosine over 15 minutes, batch 8" in export.describe_run(backbone)
    assert "from runs/m2f-256;" in export.describe_run(whole) and "minutes," not in export.describe_run(whole)
    assert "from scratch (small)" in export.describe_run(scratch)
    assert "3 epochs in 21 min, best validation mean F1 0.7400" in export.describe_run(scratch)


def test_the_card_names_the_lovasz_term_and_the_weight_average(tmp_path):
    plain = write_run(tmp_path / "plain", {})
    averaged = write_run(tmp_path / "averaged", {"semantic_lovasz_weight": 1.0, "ema_decay": 0.995})
    assert "Lovász" not in export.describe_run(plain) and "EMA" not in export.describe_run(plain)
    assert "semantic Dice 1.0; Lovász-softmax 1.0; weights averaged (EMA, decay 0.995)" in export.describe_run(averaged)


def test_the_card_names_an_official_split_as_such(tmp_path):
    seeded = write_run(tmp_path / "seeded", {})
    official = write_run(tmp_path / "official", {})
    (official / "split.json").write_text(json.dumps({"split": "official", "val_indices": [0, 1]}))
    assert "test 100 / validation 100 pairs held out (seed 0)" in export.describe_run(seeded)
    assert "official validation and test splits" in export.describe_run(official)
    assert "held out" not in export.describe_run(official)


def test_the_card_names_a_soups_members_and_gives_the_intervals():
    model = build_model("tiny", CELEBAMASK_HQ_SCHEME, None)
    model.config.face_parser_soup = ["runs/a", "runs/b/checkpoint-9"]
    report = {"per_class": {"skin": {"f1": 0.9, "iou": 0.8, "pixels": 10}}, "per_image_f": 0.83,
              "mean_f1_foreground": 0.76, "mean_f1_all": 0.77, "mean_iou": 0.66, "images": 100,
              "classes_never_predicted": [], "split": "test",
              "ci95": {"per_image_f": [0.81, 0.84], "mean_f1_foreground": [0.72, 0.79], "mean_f1_all": [0.73, 0.8]}}
    card = export.model_card(model, report, "bash recipe.sh", "v-test", 64, [])
    assert "the mean of 2 models fine-tuned from one start" in card and "`runs/b/checkpoint-9`" in card
    assert "per-image F 0.81-0.84; pooled 18-class 0.72-0.79; 19-class 0.73-0.8" in card
    del report["ci95"]
    assert "95% intervals" not in export.model_card(build_model("tiny", CELEBAMASK_HQ_SCHEME, None), report,
                                                    "bash recipe.sh", "v-test", 64, [])
