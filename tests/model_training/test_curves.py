"""model_training.curves: the picture of runs' validation F1, against epochs or minutes."""

from __future__ import annotations

import json

import pytest

from model_training.curves import main, read_history


def write_history(run, rows) -> None:
    run.mkdir()
    (run / "eval_history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_runs_raced_on_the_clock_are_drawn_and_non_evaluation_rows_skipped(tmp_path):
    for name, f1 in (("a", 0.5), ("b", 0.7)):
        write_history(tmp_path / name, [{"epoch": 1, "elapsed_s": 60, "eval_mean_f1_foreground": f1 - 0.2},
                                        {"epoch": 1.5, "elapsed_s": 90, "loss": 3.0},
                                        {"epoch": 2, "elapsed_s": 120, "eval_mean_f1_foreground": f1}])
    out = tmp_path / "race.png"
    main(["--runs", str(tmp_path / "a"), str(tmp_path / "b"), "--against", "minutes", "--out", str(out),
          "--ymin", "0.2"])
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [r["epoch"] for r in read_history(tmp_path / "a" / "eval_history.jsonl")] == [1, 2]


def test_the_picture_goes_into_a_new_folder_and_a_missing_class_is_no_point_at_zero(tmp_path, monkeypatch):
    write_history(tmp_path / "a", [
        {"epoch": 1, "elapsed_s": 60, "eval_mean_f1_foreground": 0.6},
        {"epoch": 2, "elapsed_s": 120, "eval_mean_f1_foreground": 0.7, "eval_f1_u_lip": 0.8}])
    import matplotlib.axes

    drawn = []
    plot = matplotlib.axes.Axes.plot
    monkeypatch.setattr(matplotlib.axes.Axes, "plot", lambda ax, *a, **k: drawn.append(a[:2]) or plot(ax, *a, **k))
    out = tmp_path / "new" / "folder" / "curve.png"
    main(["--runs", str(tmp_path / "a"), "--out", str(out)])
    assert out.is_file()
    assert [list(ys) for _, ys in drawn] == [[0.6, 0.7], [0.8]]  # the upper lip only where it was scored


def test_a_run_without_history_is_named(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match="empty/eval_history.jsonl"):
        main(["--runs", str(tmp_path / "empty"), "--out", str(tmp_path / "x.png")])
