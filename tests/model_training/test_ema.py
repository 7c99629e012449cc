"""model_training.ema: the average of the weights and of the batch-norm statistics, swapped in for evaluation,
restored on resume; and a training run that evaluates, keeps and exports the averaged weights."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import TrainerControl, TrainerState, TrainingArguments

from face_parser.labels import CELEBAMASK_HQ_SCHEME
from face_parser.modeling import build_model
from face_parser.preprocess import PreprocessConfig
from model_training import train
from model_training.ema import WeightEma, ema_folder
from tests.conftest import write_cartoon_set


def small_net() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.BatchNorm1d(3))


def set_to(net: torch.nn.Module, value: float) -> None:
    with torch.no_grad():
        for tensor in [*net.parameters(), net[1].running_mean]:
            tensor.fill_(value)


def step(ema: WeightEma, net: torch.nn.Module) -> None:
    ema.on_step_end(None, None, TrainerControl(), model=net)


def test_the_average_follows_the_weights_and_the_batch_norm_statistics_by_the_decay():
    net = small_net()
    ema = WeightEma(net, decay=0.75)
    set_to(net, 1.0)
    step(ema, net)  # the first update takes the weights as they are
    set_to(net, 5.0)
    step(ema, net)
    averaged = ema.module
    for tensor in [*averaged.parameters(), averaged[1].running_mean]:
        torch.testing.assert_close(tensor, torch.full_like(tensor, 0.75 * 1.0 + 0.25 * 5.0))


def test_the_average_is_swapped_in_for_a_block_and_out_after_it():
    net = small_net()
    ema = WeightEma(net, decay=0.5)
    set_to(net, 2.0)
    step(ema, net)
    set_to(net, 4.0)
    with ema.swapped_into(net):
        torch.testing.assert_close(net[0].weight, torch.full_like(net[0].weight, 2.0))
    torch.testing.assert_close(net[0].weight, torch.full_like(net[0].weight, 4.0))


def test_a_restored_average_goes_on_from_where_it_was():
    """Resumed, the average continues from the saved one: the next step is averaged into it, not copied over it."""
    saved, net = small_net(), small_net()
    set_to(saved, 3.0)
    ema = WeightEma(net, decay=0.5)
    ema.restore(saved)
    set_to(net, 7.0)
    step(ema, net)
    torch.testing.assert_close(ema.module[0].bias, torch.full((3,), 5.0))


def test_a_decay_outside_zero_to_one_is_refused():
    with pytest.raises(ValueError, match="--ema_decay"):
        WeightEma(small_net(), decay=1.0)


def test_checkpoints_keep_the_average_beside_the_weights_as_a_model_folder(tmp_path):
    model = build_model("tiny", CELEBAMASK_HQ_SCHEME)
    ema = WeightEma(model, decay=0.5)
    with torch.no_grad():
        model.model.pixel_level_module.decoder.mask_projection.bias.fill_(0.25)
    ema.on_step_end(None, None, TrainerControl(), model=model)
    args = TrainingArguments(output_dir=str(tmp_path), report_to="none")
    ema.on_save(args, TrainerState(global_step=7), TrainerControl())
    saved = train.load_checkpoint(str(ema_folder(tmp_path / "checkpoint-7")))
    assert_same_weights(saved, ema.module)
    torch.testing.assert_close(saved.model.pixel_level_module.decoder.mask_projection.bias, torch.full((32,), 0.25))


def parser_trainer(data, run, model, ema: WeightEma | None) -> train.ParserTrainer:
    data_args = train.DataArguments(data_dir=str(data), val_count=4, image_size=64, rare_repeat=1)
    train_ds, val_ds, _, _ = train.build_datasets(data_args, PreprocessConfig(size=64))
    args = TrainingArguments(output_dir=str(run), report_to="none", per_device_eval_batch_size=2,
                             remove_unused_columns=False, label_names=["labels_hw"], disable_tqdm=True)
    return train.ParserTrainer(model=model, args=args, train_dataset=train_ds, eval_dataset=val_ds,
                               data_collator=train.collate, matching="fixed", class_weights=None, ema=ema)


def test_evaluation_scores_the_averaged_weights_and_leaves_the_trained_ones(tmp_path):
    data = tmp_path / "data"
    write_cartoon_set(data, 8)
    torch.manual_seed(0)
    model, other = build_model("tiny", CELEBAMASK_HQ_SCHEME), build_model("tiny", CELEBAMASK_HQ_SCHEME)
    ema = WeightEma(model, decay=0.5)
    ema.restore(other)
    trained = {k: v.clone() for k, v in model.state_dict().items()}
    with_average = parser_trainer(data, tmp_path / "a", model, ema).evaluate()["eval_loss"]
    assert with_average == pytest.approx(parser_trainer(data, tmp_path / "b", other, None).evaluate()["eval_loss"])
    assert with_average != pytest.approx(parser_trainer(data, tmp_path / "c", model, None).evaluate()["eval_loss"])
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, trained[key], msg=key)


def run_args(data, run, *extra: str) -> list[str]:
    return ["--dataset", "folder", "--data_dir", str(data), "--val_count", "2", "--preset", "tiny",
            "--image_size", "64", "--output_dir", str(run), "--per_device_train_batch_size", "4",
            "--per_device_eval_batch_size", "2", "--learning_rate", "1e-2", "--report_to", "none",
            "--save_strategy", "steps", "--save_steps", "1", "--seed", "0", "--disable_tqdm", "true",
            "--rare_repeat", "1", "--ema_decay", "0.5", "--semantic_lovasz_weight", "1.0", *extra]


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    a_weights, b_weights = dict(a.named_parameters()), dict(b.named_parameters())
    assert a_weights.keys() == b_weights.keys()
    for key, value in a_weights.items():
        torch.testing.assert_close(value, b_weights[key], msg=key)


@pytest.mark.slow
def test_the_best_checkpoint_is_chosen_and_exported_by_its_averaged_weights(tmp_path):
    data, run = tmp_path / "data", tmp_path / "run"
    write_cartoon_set(data, 10)
    train.main(run_args(data, run, "--eval_strategy", "steps", "--eval_steps", "1", "--max_steps", "3",
                        "--load_best_model_at_end", "--metric_for_best_model", "loss", "--greater_is_better", "false"))
    state = json.loads((run / "checkpoint-3" / "trainer_state.json").read_text())
    best = state["best_model_checkpoint"]
    assert_same_weights(train.load_checkpoint(str(run)), train.load_checkpoint(str(ema_folder(best))))
    raw = dict(train.load_checkpoint(str(run / "checkpoint-3")).named_parameters())
    averaged = dict(train.load_checkpoint(str(ema_folder(run / "checkpoint-3"))).named_parameters())
    assert any(not torch.equal(raw[k], averaged[k]) for k in raw)  # the raw weights are kept for resuming


@pytest.mark.slow
def test_a_resumed_run_restores_its_average_and_ends_holding_it(tmp_path):
    """Re-run with no step left (8 training photos, 2 steps an epoch, so it stops at an epoch's end): the saved
    model is the checkpoint's average, restored and adopted at the end."""
    data, run = tmp_path / "data", tmp_path / "run"
    write_cartoon_set(data, 10)
    args = run_args(data, run, "--eval_strategy", "no", "--max_steps", "4")
    train.main(args)
    (run / "model.safetensors").unlink()
    train.main(args)
    assert_same_weights(train.load_checkpoint(str(run)), train.load_checkpoint(str(ema_folder(run / "checkpoint-4"))))
