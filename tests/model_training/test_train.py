"""model_training.train: the wall-clock budget (a run on a lent machine anneals and stops on time, every
torchrun rank at the same step), a resumed run that is the run it resumes, a best model reloaded whole,
validation on masks of several sizes, and arguments refused with messages that name them."""

from __future__ import annotations

import datetime
import json
import math
import socket
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import EvalPrediction, TrainerControl, TrainingArguments

from face_parser.labels import CELEBAMASK_HQ_SCHEME
from face_parser.modeling import build_model
from face_parser.postprocess import label_map, semantic_scores
from face_parser.preprocess import PreprocessConfig
from model_training import train
from model_training.data import PAD_INDEX
from model_training.metrics import ConfusionMatrix
from tests.conftest import draw_face, write_cartoon_set


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


def budget_on_one_rank(rank: int, port: int, out_dir) -> None:
    """One of two gloo ranks whose clocks start 10 s apart (rank 1 read its data later): what each decides."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2,
                            timeout=datetime.timedelta(seconds=60))
    try:
        clock = Clock(1000.0 + 10 * rank)
        train.time = SimpleNamespace(time=clock)  # this process's own clock
        args = SimpleNamespace(device=torch.device("cpu"))
        budget = train.TimeBudget(minutes=1)
        budget.on_train_begin(args, None, TrainerControl())
        seen = []
        for now in (1050.0, 1065.0):  # rank 0's budget ends at 1060 on its own clock, rank 1's at 1070 on its
            clock.now = now + 0.3 * rank  # and the ranks reach a step a little apart
            control = TrainerControl()
            budget.on_step_end(args, None, control)
            seen.append([control.should_training_stop, budget.factor(steps=10, warmup_steps=0)])
        (out_dir / f"{rank}.json").write_text(json.dumps(seen))
    finally:
        dist.destroy_process_group()


def test_under_torchrun_every_rank_stops_at_the_same_step_with_the_same_learning_rate(tmp_path):
    """Rank 0's clock rules: a rank stopping (evaluating, saving) while another trains on would hang both."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torch.multiprocessing.spawn(budget_on_one_rank, args=(port, tmp_path), nprocs=2)
    first, second = (json.loads((tmp_path / f"{rank}.json").read_text()) for rank in (0, 1))
    assert first == second
    assert [stop for stop, _ in first] == [False, True]
    assert first[0][1] == pytest.approx(0.5 * (1 + math.cos(math.pi * 50 / 60)))


def test_a_mistyped_matching_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        train.main(["--matching", "hungarain", "--data_dir", str(tmp_path / "data"), "--output_dir", str(tmp_path)])
    assert "invalid choice: 'hungarain'" in capsys.readouterr().err


def test_hungarian_matching_trains_inside_a_ddp_wrapper(tmp_path):
    """DistributedDataParallel has no ``config``: the loss reads the trainer's own model."""
    import torch.distributed as dist

    model = build_model("tiny", CELEBAMASK_HQ_SCHEME)
    trainer = train.ParserTrainer(model=model, args=TrainingArguments(output_dir=str(tmp_path), report_to="none"),
                                  matching="hungarian", class_weights=None)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        labels = torch.from_numpy(draw_face(64)[1].astype(np.int64))[None]
        inputs = {"pixel_values": torch.randn(1, 3, 64, 64), "labels_hw": labels}
        loss = trainer.compute_loss(torch.nn.parallel.DistributedDataParallel(model), inputs)
    finally:
        dist.destroy_process_group()
    assert torch.isfinite(loss)


@pytest.mark.parametrize("argument", ["--init_from", "--resume_from_checkpoint"])
@pytest.mark.parametrize("value", ["runs/typo", "./typo", "/nowhere/checkpoint-3", "a/b/c"])
def test_a_missing_model_folder_is_refused_at_once_naming_the_argument(tmp_path, monkeypatch, argument, value):
    """Not asked of the Hugging Face hub as a model id (a hub error, and 23 s of retries offline)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    with pytest.raises(SystemExit, match=f"^{argument} {value}: no such folder"):
        train.main([argument, value, "--data_dir", str(tmp_path / "data"), "--output_dir", str(tmp_path / "run"),
                    "--report_to", "none"])


def test_a_hub_id_is_not_taken_for_a_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert not train.local_path("facebook/maskformer-swin-base-ade")
    assert train.local_path("runs/x") is False  # no runs/ folder here
    (tmp_path / "runs").mkdir()
    assert train.local_path("runs/x")


def test_a_folder_that_holds_no_model_is_named_in_the_message(tmp_path):
    data = tmp_path / "data"
    write_cartoon_set(data, 4, size=64)
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match=f"^--init_from {tmp_path / 'empty'}: "):
        train.main(["--data_dir", str(data), "--val_count", "1", "--init_from", str(tmp_path / "empty"),
                    "--output_dir", str(tmp_path / "run"), "--report_to", "none", "--rare_repeat", "1"])


def write_mixed_sizes(data) -> None:
    """LaPa and mixed folders: masks of 80 and 96 px, so the labels of a batch, and of the batches, differ."""
    (data / "images").mkdir(parents=True)
    (data / "masks").mkdir()
    for i in range(8):
        image, mask = draw_face(96 if i % 2 else 80, seed=i)
        Image.fromarray(image).save(data / "images" / f"{i:03d}.png")
        Image.fromarray(mask).save(data / "masks" / f"{i:03d}.png")


@pytest.mark.slow
@pytest.mark.parametrize("eval_batch", ["1", "3"])
def test_validation_scores_masks_of_several_sizes_each_at_its_own(tmp_path, eval_batch):
    data = tmp_path / "data"
    write_mixed_sizes(data)
    metrics = train.main(["--dataset", "folder", "--data_dir", str(data), "--val_count", "4", "--preset", "tiny",
                          "--image_size", "64", "--output_dir", str(tmp_path / "run"),
                          "--per_device_train_batch_size", "2", "--per_device_eval_batch_size", eval_batch,
                          "--report_to", "none", "--eval_strategy", "epoch", "--save_strategy", "no",
                          "--max_steps", "1", "--disable_tqdm", "true", "--rare_repeat", "1"])
    assert math.isfinite(metrics["eval_loss"]) and 0 <= metrics["eval_mean_iou"] <= 1


def test_each_padded_label_map_gets_the_prediction_at_its_own_size():
    """An 80 px mask padded to 96 is scored against the prediction resized to 80, not stretched to 96."""
    torch.manual_seed(0)
    class_logits, mask_logits = torch.randn(2, 19, 20), torch.randn(2, 19, 16, 16)
    labels = torch.full((2, 96, 96), PAD_INDEX)
    labels[0, :80, :80], labels[1] = 1, 2
    predicted = train.label_maps_for_metrics((class_logits, mask_logits), labels)
    alone = label_map(semantic_scores(class_logits[:1], mask_logits[:1]), size=(80, 80))[0]
    torch.testing.assert_close(predicted[0, :80, :80].long(), alone.long())
    torch.testing.assert_close(predicted[1].long(),
                               label_map(semantic_scores(class_logits[1:], mask_logits[1:]), size=(96, 96))[0].long())
    names = list(CELEBAMASK_HQ_SCHEME.names)
    padded = train.metrics_fn(names)(EvalPrediction(predictions=predicted.numpy(), label_ids=labels.numpy()))
    cm = ConfusionMatrix(len(names))
    cm.update(np.ones((80, 80)), alone.numpy())
    cm.update(np.full((96, 96), 2), predicted[1].numpy())
    assert padded["mean_iou"] == cm.scores(names)["mean_iou"]


def test_validation_of_several_sizes_does_not_depend_on_the_batch_size(tmp_path):
    """Padded batches are scored photo by photo: the same model gets the same loss and scores in any batches."""
    write_mixed_sizes(tmp_path / "data")
    data_args = train.DataArguments(data_dir=str(tmp_path / "data"), val_count=4, image_size=64, rare_repeat=1)
    _, val_ds, _, _ = train.build_datasets(data_args, PreprocessConfig(size=64))
    torch.manual_seed(0)
    model = build_model("tiny", CELEBAMASK_HQ_SCHEME)
    found = []
    for batch in (1, 4):
        args = TrainingArguments(output_dir=str(tmp_path / "run"), report_to="none", per_device_eval_batch_size=batch,
                                 remove_unused_columns=False, label_names=["labels_hw"], disable_tqdm=True)
        trainer = train.ParserTrainer(model=model, args=args, eval_dataset=val_ds, data_collator=train.collate,
                                      compute_metrics=train.metrics_fn(list(CELEBAMASK_HQ_SCHEME.names)),
                                      preprocess_logits_for_metrics=train.label_maps_for_metrics, matching="fixed",
                                      class_weights=None)
        metrics = trainer.evaluate()
        found.append({key: value for key, value in metrics.items() if "time" not in key and "per_second" not in key})
    assert found[0] == pytest.approx(found[1])
