"""Weight averaging of fine-tuned runs (model soup)."""

from __future__ import annotations

import json

import pytest
import torch

from face_parser.labels import CELEBAMASK_HQ_SCHEME, LAPA_SCHEME
from face_parser.modeling import FaceParser, build_model, save_model_folder
from face_parser.preprocess import PreprocessConfig
from model_training import average


def saved_tiny(folder, seed: int, labels=CELEBAMASK_HQ_SCHEME) -> str:
    torch.manual_seed(seed)
    save_model_folder(build_model("tiny", labels), PreprocessConfig(size=64), folder, version=f"s{seed}", fp16=False)
    return str(folder)


def test_soup_is_the_mean_of_the_weights_and_loads_as_a_model_folder(tmp_path):
    a, b = saved_tiny(tmp_path / "a", 0), saved_tiny(tmp_path / "b", 1)
    average.main(["--checkpoints", a, b, "--out", str(tmp_path / "soup"), "--image_size", "64"])
    wa, wb = (average.load_float32(f).state_dict() for f in (a, b))
    soup = average.load_float32(str(tmp_path / "soup")).state_dict()
    name = next(k for k, v in wa.items() if v.is_floating_point() and not torch.equal(v, wb[k]))
    torch.testing.assert_close(soup[name], (wa[name] + wb[name]) / 2)
    assert FaceParser.load(str(tmp_path / "soup"), device="cpu").labels.names == CELEBAMASK_HQ_SCHEME.names
    assert json.loads((tmp_path / "soup" / "config.json").read_text())["face_parser_soup"] == [a, b]  # the card's


def test_soup_keeps_its_members_input_size_and_refuses_to_guess_between_two(tmp_path):
    a, b = saved_tiny(tmp_path / "a", 0), saved_tiny(tmp_path / "b", 1)
    average.main(["--checkpoints", a, b, "--out", str(tmp_path / "soup")])
    assert FaceParser.load(str(tmp_path / "soup"), device="cpu").preprocess.size == 64
    torch.manual_seed(2)
    c = str(save_model_folder(build_model("tiny", CELEBAMASK_HQ_SCHEME), PreprocessConfig(size=96), tmp_path / "c",
                              version="c", fp16=False))
    with pytest.raises(SystemExit, match="give --image_size"):
        average.main(["--checkpoints", a, c, "--out", str(tmp_path / "mixed")])
    assert not (tmp_path / "mixed").exists()


def test_soup_refuses_models_of_different_shapes(tmp_path):
    a, b = saved_tiny(tmp_path / "a", 0), saved_tiny(tmp_path / "b", 1, labels=LAPA_SCHEME)
    with pytest.raises(ValueError, match="not the same architecture"):
        average.average_models([a, b])
    with pytest.raises(ValueError, match="at least two"):
        average.average_models([a])


@pytest.mark.parametrize("given, said", [(["/no/such/run", "/no/such/other"], "no such folder: /no/such/run"),
                                         (["one"], "at least two")])
def test_the_command_names_bad_checkpoints(tmp_path, capsys, given, said):
    if given == ["one"]:
        given = [saved_tiny(tmp_path / "one", 0)]
    with pytest.raises(SystemExit):
        average.main(["--checkpoints", *given, "--out", str(tmp_path / "soup")])
    assert said in capsys.readouterr().err
