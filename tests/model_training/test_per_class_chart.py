"""model_training.per_class_chart: several reports, one chart; a bad argument names itself."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from model_training import per_class_chart


def write_report(path, f1: float) -> str:
    classes = {"background": {"f1": 0.9, "pixels": 10}, "skin": {"f1": f1, "pixels": 5},
               "hat": {"f1": None, "pixels": 0}, "hair": {"f1": f1 / 2, "pixels": 3}}
    path.write_text(json.dumps({"per_class": classes, "mean_f1_foreground": f1}))
    return str(path)


def test_chart_of_two_reports(tmp_path):
    a, b = write_report(tmp_path / "a.json", 0.8), write_report(tmp_path / "b.json", 0.6)
    out = tmp_path / "figs" / "chart.png"
    per_class_chart.main(["--reports", f"v3={a}", f"new={b}", "--out", str(out)])
    assert Image.open(out).size[0] > 800
    assert list(per_class_chart.read_reports([f"v3={a}", f"new={b}"])) == ["v3", "new"]


@pytest.mark.parametrize("pair, said", [("no-equals-sign", "NAME=PATH"), ("x=/no/such/report.json", "/no/such")])
def test_bad_reports_say_which(pair, said):
    with pytest.raises(SystemExit, match=said):
        per_class_chart.read_reports([pair])


def test_a_json_that_is_no_evaluation_report_is_named(tmp_path):
    other = tmp_path / "calibration.json"
    other.write_text(json.dumps({"biases": {"hat": -2}}))
    with pytest.raises(SystemExit, match="calibration.json: not a model_training.evaluate report"):
        per_class_chart.read_reports([f"x={other}"])
