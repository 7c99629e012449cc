"""The wall-clock budget of model_training.train: a run on a lent machine anneals and stops on time."""

from __future__ import annotations

import pytest
import torch
from transformers import TrainerControl

from model_training import train


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
