"""model_training.train: the wall-clock budget (a run on a lent machine anneals and stops on time), and a
resumed run that is the run it resumes, and a best model reloaded whole."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import TrainerControl

from model_training import train
from tests.conftest import write_cartoon_set


class Clock:
    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(train.time, "time", c)
    return c


def test_cosine_follows_the_clock_not_the_steps(clock):
    budget = train.TimeBudget(minutes=10)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = budget.cosine(optimizer, warmup_steps=4)
    factor = schedule.lr_lambdas[0]
    assert factor(0) == pytest.approx(0.25)  # warm-up counts steps
    assert factor(3) == pytest.approx(1.0)
    clock.now += 300  # half the budget spent, whatever the step count
    assert factor(10) == pytest.approx(0.5) and factor(10_000) == pytest.approx(0.5)
    clock.now += 240
    assert 0 < factor(50) < 0.05
    clock.now += 120  # past the deadline: stays at zero
    assert factor(60) == pytest.approx(0.0)


def test_budget_stops_training_with_an_evaluation_and_a_checkpoint(clock):
    budget = train.TimeBudget(minutes=1)
    control = TrainerControl()
    budget.on_step_end(None, None, control)
    assert not control.should_training_stop
    clock.now += 61
    budget.on_step_end(None, None, control)
    assert control.should_training_stop and control.should_evaluate and control.should_save


def test_a_resumed_cosine_keeps_its_own_learning_rate_and_warms_up_again(clock):
    """The checkpoint's schedule belonged to another run: its peak rate and its step count are not reused."""
    first = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=3e-4)
    old = train.TimeBudget(minutes=10).cosine(first, warmup_steps=4)
    for _ in range(100):
        first.step()
        old.step()
    saved = old.state_dict()
    clock.now += 3600  # another day, another budget
    second = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1e-4)
    new = train.TimeBudget(minutes=10).cosine(second, warmup_steps=4)
    new.load_state_dict(saved)
    assert new.last_epoch == 100  # the step count goes on (the Trainer's logs, its checkpoints)
    assert second.param_groups[0]["lr"] == pytest.approx(1e-4 * 0.25)  # step 1 of a new warm-up, at 1e-4
    for _ in range(3):
        second.step()
        new.step()
    assert second.param_groups[0]["lr"] == pytest.approx(1e-4)


@pytest.mark.slow
def test_a_resumed_run_takes_every_weight_from_its_checkpoint(tmp_path):
    """Checkpoints store the decoder's feed-forward weights under legacy names (``fc1``, not ``mlp.fc1``); the
    Trainer's own resume would skip them and keep the new model's. The run here resumes with nothing left to
    train, so its saved model must be the checkpoint, weight for weight; deepening applies before the resume."""
    data = tmp_path / "data"
    write_cartoon_set(data, 10)
    run = tmp_path / "run"
    common = ["--dataset", "folder", "--data_dir", str(data), "--val_count", "2", "--preset", "tiny",
              "--image_size", "64", "--output_dir", str(run), "--per_device_train_batch_size", "4",
              "--per_device_eval_batch_size", "2", "--learning_rate", "1e-2", "--report_to", "none",
              "--eval_strategy", "no", "--save_strategy", "steps", "--save_steps", "3", "--max_steps", "3",
              "--seed", "0", "--disable_tqdm", "true", "--rare_repeat", "1", "--deepen_to", "1,2,1,1"]
    train.main(common)
    checkpoint = dict(train.load_checkpoint(str(run / "checkpoint-3")).named_parameters())
    (run / "model.safetensors").unlink()
    train.main(common)  # resumes from checkpoint-3 with no step left (the Trainer still moves batch-norm statistics)
    resumed = dict(train.load_checkpoint(str(run)).named_parameters())
    assert any(".mlp.fc1." in key for key in checkpoint) and resumed.keys() == checkpoint.keys()
    for key, value in checkpoint.items():
        torch.testing.assert_close(resumed[key], value, msg=key)


@pytest.mark.slow
def test_the_best_checkpoint_is_reloaded_whole_at_the_end(tmp_path):
    """``load_best_model_at_end`` through the same loader: the run's saved model is the best checkpoint's."""
    data = tmp_path / "data"
    write_cartoon_set(data, 10)
    run = tmp_path / "run"
    train.main(["--dataset", "folder", "--data_dir", str(data), "--val_count", "2", "--preset", "tiny",
                "--image_size", "64", "--output_dir", str(run), "--per_device_train_batch_size", "4",
                "--per_device_eval_batch_size", "2", "--learning_rate", "1e-2", "--report_to", "none",
                "--eval_strategy", "steps", "--eval_steps", "1", "--save_strategy", "steps", "--save_steps", "1",
                "--max_steps", "3", "--load_best_model_at_end", "--metric_for_best_model", "loss",
                "--greater_is_better", "false", "--seed", "0", "--disable_tqdm", "true", "--rare_repeat", "1"])
    state = json.loads((run / "checkpoint-3" / "trainer_state.json").read_text())
    best = dict(train.load_checkpoint(state["best_model_checkpoint"]).named_parameters())
    saved = dict(train.load_checkpoint(str(run)).named_parameters())
    assert saved.keys() == best.keys()
    for key, value in best.items():
        torch.testing.assert_close(saved[key], value, msg=key)
