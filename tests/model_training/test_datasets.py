"""Each loader on small data written here in its real layout, the official splits chosen by ``part``, and
bad files named in errors."""

from __future__ import annotations

from argparse import Namespace

import numpy as np
import pytest
from PIL import Image

from face_parser.labels import CELEBAMASK_HQ_SCHEME, LAPA_SCHEME
from face_parser.preprocess import PreprocessConfig
from model_training import train
from model_training.augment import AugmentConfig, augment_pair
from model_training.datasets.base import DatasetError
from model_training.datasets.celebamask_hq import CelebAMaskHQDataset
from model_training.datasets.folders import FolderDataset
from model_training.datasets.hf_datasets import HFSegmentationDataset
from model_training.datasets.lapa import lapa_dataset
from model_training.datasets.loaders import open_dataset
from model_training.metrics import ConfusionMatrix
from tests.conftest import draw_face


def write_folder(root, n=3, size=64, mask_dir="masks", image_dir="images"):
    (root / image_dir).mkdir(parents=True)
    (root / mask_dir).mkdir(parents=True)
    for i in range(n):
        image, mask = draw_face(size, seed=i)
        Image.fromarray(image).save(root / image_dir / f"{i}.jpg")
        Image.fromarray(mask).save(root / mask_dir / f"{i}.png")


def test_folder_dataset_yields_pairs(tmp_path):
    write_folder(tmp_path)
    ds = FolderDataset(tmp_path)
    image, mask = ds[1]
    assert len(ds) == 3 and image.shape == (64, 64, 3) and mask.shape == (64, 64)
    assert mask.dtype == np.uint8 and 13 in mask


@pytest.mark.parametrize("breakage", ["missing", "size", "class_id", "unreadable"])
def test_bad_files_are_named(tmp_path, breakage):
    write_folder(tmp_path)
    bad = tmp_path / "masks" / "2.png"
    if breakage == "missing":
        bad.unlink()
    elif breakage == "size":
        Image.fromarray(np.zeros((32, 32), np.uint8)).save(bad)
    elif breakage == "class_id":
        Image.fromarray(np.full((64, 64), 40, np.uint8)).save(bad)
    else:
        bad = tmp_path / "images" / "2.jpg"
        bad.write_bytes(b"not a jpeg")
    with pytest.raises(DatasetError, match=str(bad)):
        ds = FolderDataset(tmp_path)
        ds[2]


def test_training_stops_with_the_file_name(tmp_path, capsys):
    write_folder(tmp_path, n=6)
    (tmp_path / "masks" / "4.png").unlink()
    with pytest.raises(SystemExit, match="4.png"):
        train.main(["--data_dir", str(tmp_path), "--val_count", "1", "--output_dir", str(tmp_path / "run"),
                    "--preset", "tiny", "--report_to", "none"])


def write_celebamask_hq(root, partitions=(0, 1, 0), size=64):
    """The official release's layout: photo ``n`` is CelebA file ``10 * (n + 1) + 1`` in ``partitions[n]``
    (0 train, 1 val, 2 test); each has a skin square with a nose square over it."""
    (root / "CelebA-HQ-img").mkdir(parents=True)
    anno = root / "CelebAMask-HQ-mask-anno" / "0"
    anno.mkdir(parents=True)
    skin = np.zeros((512, 512), np.uint8)
    skin[100:400, 100:400] = 255
    nose = np.zeros((512, 512), np.uint8)
    nose[200:250, 200:250] = 255
    for n in range(len(partitions)):
        Image.new("RGB", (size, size), (n * 40, 100, 100)).save(root / "CelebA-HQ-img" / f"{n}.jpg")
        Image.fromarray(skin).save(anno / f"{n:05d}_skin.png")
        Image.fromarray(nose).save(anno / f"{n:05d}_nose.png")
    files = [f"{10 * (n + 1) + 1:06d}.jpg" for n in range(len(partitions))]
    (root / "CelebA-HQ-to-CelebA-mapping.txt").write_text(
        "idx orig_idx orig_file\n" + "".join(f"{n} {10 * (n + 1)} {f}\n" for n, f in enumerate(files)))
    (root / "list_eval_partition.txt").write_text("".join(f"{f} {p}\n" for f, p in zip(files, partitions,
                                                                                       strict=True)))


def test_celebamask_hq_official_layout_merges_parts_and_splits(tmp_path):
    write_celebamask_hq(tmp_path, size=1024)
    train_ds, val_ds = CelebAMaskHQDataset(tmp_path, "train"), CelebAMaskHQDataset(tmp_path, "val")
    assert train_ds.indices == [0, 2] and val_ds.indices == [1]
    image, mask = train_ds[0]
    assert image.shape == (512, 512, 3)
    assert mask[300, 300] == 1 and mask[220, 220] == 2 and mask[10, 10] == 0  # nose drawn over skin


def test_an_unreadable_part_mask_is_a_dataset_error_naming_it(tmp_path):
    write_celebamask_hq(tmp_path)
    nose = tmp_path / "CelebAMask-HQ-mask-anno" / "0" / "00002_nose.png"
    nose.write_bytes(nose.read_bytes()[:60])  # truncated: the header reads, the pixels do not
    with pytest.raises(DatasetError, match=str(nose)):
        CelebAMaskHQDataset(tmp_path, "train")[1]


def scoring_args(dataset, data_dir, **kw):
    """The options ``open_dataset`` reads (as ``evaluate``, ``export`` and ``compare`` parse them)."""
    return Namespace(**{"dataset": dataset, "data_dir": str(data_dir), "val_count": 1, "test_count": 1,
                        "split_seed": 0, "image_column": "image", "label_column": "label", **kw})


def test_celebamask_hq_parts_are_the_official_val_and_test_splits(tmp_path):
    write_celebamask_hq(tmp_path, partitions=(0, 0, 1, 1, 2, 2))
    for part, photos in (("val", [2, 3]), ("test", [4, 5])):
        train_base, held, train_idx, held_idx = open_dataset(scoring_args("celebamask-hq", tmp_path), part=part)
        assert train_base.indices == [0, 1] and train_idx == [0, 1]
        assert [held.indices[i] for i in held_idx] == photos, part


def write_lapa(root, counts):
    """LaPa's layout, ``<split>/images`` + ``<split>/labels``, with ``counts[split]`` pairs per split."""
    for split, n in counts.items():
        write_folder(root / split, n=n, mask_dir="labels")


def test_lapa_parts_are_its_val_and_test_folders(tmp_path):
    write_lapa(tmp_path, {"train": 3, "val": 2, "test": 1})
    for part, n in (("val", 2), ("test", 1)):
        train_base, held, _, held_idx = open_dataset(scoring_args("lapa", tmp_path), part=part)
        assert len(train_base) == 3 and held.root == tmp_path / part and held_idx == list(range(n)), part


def test_lapa_without_a_test_folder_names_it(tmp_path):
    write_lapa(tmp_path, {"train": 3, "val": 2})
    assert len(open_dataset(scoring_args("lapa", tmp_path), part="val")[1]) == 2
    with pytest.raises(DatasetError, match=f"{tmp_path / 'test'}: LaPa"):
        open_dataset(scoring_args("lapa", tmp_path), part="test")


@pytest.mark.parametrize("dataset", ["folder", "celebamask-hq", "lapa"])
def test_an_unknown_part_is_refused_for_every_dataset(tmp_path, dataset):
    {"folder": lambda: write_folder(tmp_path, n=4), "celebamask-hq": lambda: write_celebamask_hq(tmp_path),
     "lapa": lambda: write_lapa(tmp_path, {"train": 2, "val": 1, "test": 1})}[dataset]()
    with pytest.raises(ValueError, match=r"'validation'.*val \| test"):
        open_dataset(scoring_args(dataset, tmp_path), part="validation")


def test_split_record_of_an_official_split_says_so(tmp_path):
    """``split.json`` of a CelebAMask-HQ run: positions in the official validation split, and no test positions
    (the official test split is the release's; ``--test_count`` does not apply)."""
    write_celebamask_hq(tmp_path, partitions=(0, 0, 1, 2))
    args = train.DataArguments(dataset="celebamask-hq", data_dir=str(tmp_path), val_count=1, test_count=1,
                               fix_lr_convention=False)
    record = train.build_datasets(args, PreprocessConfig(size=64))[3]
    assert record == {"split": "official", "val_indices": [0]}


def test_hf_dataset_from_a_local_folder(tmp_path):
    datasets = pytest.importorskip("datasets")
    pairs = [draw_face(48, seed=i) for i in range(3)]
    ds = datasets.Dataset.from_dict({"img": [Image.fromarray(p[0]) for p in pairs],
                                     "seg": [Image.fromarray(p[1]) for p in pairs]})
    ds.save_to_disk(str(tmp_path / "hf"))
    loaded = HFSegmentationDataset(str(tmp_path / "hf"), image_column="img", label_column="seg")
    image, mask = loaded[2]
    np.testing.assert_array_equal(mask, pairs[2][1])
    assert image.shape == (48, 48, 3)
    with pytest.raises(DatasetError, match="columns"):
        HFSegmentationDataset(str(tmp_path / "hf"), image_column="image", label_column="seg")


@pytest.mark.parametrize("class_id", [-1, 256, 257])
def test_hf_class_ids_outside_a_byte_are_refused_not_wrapped(tmp_path, class_id):
    """-1 would become 255 (ignored) and 257 would become 1 (skin) in uint8."""
    datasets = pytest.importorskip("datasets")
    image, mask = draw_face(32, seed=0)
    labels = mask.astype(np.int64)
    labels[5, 7] = class_id
    ds = datasets.Dataset.from_dict({"image": [Image.fromarray(image)], "label": [labels.tolist()]})
    ds.save_to_disk(str(tmp_path / "hf"))
    loaded = HFSegmentationDataset(str(tmp_path / "hf"))
    with pytest.raises(DatasetError, match=rf"hf\[0\]\.label: class ids \[{class_id}\]"):
        loaded[0]


def test_lapa_layout_has_its_own_scheme(tmp_path):
    write_folder(tmp_path / "train", mask_dir="labels")
    ds = lapa_dataset(tmp_path, "train")
    assert ds.labels == LAPA_SCHEME and len(ds.labels) == 11
    with pytest.raises(DatasetError, match="outside the label scheme"):
        ds[0]  # the cartoon uses CelebAMask-HQ ids up to 18: not LaPa's


def test_flip_swaps_left_and_right_classes():
    mask = np.zeros((64, 64), np.uint8)
    mask[20:30, 5:15] = 4  # l_eye on the image's left
    image = np.zeros((64, 64, 3), np.uint8)
    cfg = AugmentConfig(size=64, min_scale=1, max_scale=1, max_rotate_deg=0, max_translate=0, flip_prob=1,
                        color_jitter=0)
    _, out = augment_pair(image, mask, cfg, CELEBAMASK_HQ_SCHEME.flip_permutation(), np.random.default_rng(0))
    assert (out == 4).sum() == 0
    assert (out[20:30, 49:59] == 5).mean() > 0.9


def test_confusion_matrix_f1():
    cm = ConfusionMatrix(3)
    cm.update(np.array([0, 1, 1, 2]), np.array([0, 1, 2, 2]))
    s = cm.scores(["bg", "a", "b"])
    assert s["per_class"]["a"]["f1"] == pytest.approx(2 / 3, abs=1e-4)
    assert s["per_class"]["b"]["f1"] == pytest.approx(2 / 3, abs=1e-4)
    assert s["mean_f1_foreground"] == pytest.approx(2 / 3, abs=1e-4)


def test_three_way_split_is_disjoint_and_keeps_the_old_validation_as_test():
    from model_training.data import split_indices

    train_idx, val_idx, test_idx = split_indices(50, 5, seed=3, test_count=7)
    assert len(val_idx) == 5 and len(test_idx) == 7 and len(train_idx) == 38
    assert sorted(train_idx + val_idx + test_idx) == list(range(50))
    _, old_val, none = split_indices(50, 7, seed=3)
    assert old_val == test_idx and none == []
    with pytest.raises(ValueError, match="val_count"):
        split_indices(10, 5, seed=0, test_count=5)


def test_resume_prefers_the_explicit_checkpoint_then_the_last_one(tmp_path):
    from transformers import TrainingArguments

    run = tmp_path / "run"
    for step in (10, 30, 20):
        (run / f"checkpoint-{step}").mkdir(parents=True)
    assert train.resume_checkpoint(TrainingArguments(str(run)), run) == str(run / "checkpoint-30")
    explicit = TrainingArguments(str(run), resume_from_checkpoint=str(run / "checkpoint-10"))
    assert train.resume_checkpoint(explicit, run) == str(run / "checkpoint-10")
    assert train.resume_checkpoint(TrainingArguments(str(tmp_path / "new")), tmp_path / "new") is None
