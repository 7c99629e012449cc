"""Fit per-class log-biases on the validation split: a prior correction for the classes a model under- or
over-predicts.

    python -m model_training.calibrate --model models/face-parser --data_dir ../shared/data/celebamask-mini \
        --test_count 100 --val_count 100 --fix_lr_convention --out reports/calibrate [--write]

Why: a label map takes each pixel's highest class score, and the scores carry the training set's class
frequencies, so where a rare part (a necklace, an earring, a hat) is nearly as likely as its neighbour, the
frequent neighbour wins. Multiplying a class's score by ``exp(bias)`` moves those near-ties and nothing else.

The biases maximise the mean of per-image F and the pooled 18-class F1 on the validation split, by coordinate
ascent over a grid. Mirrored parts share one bias (so the mirror pass stays symmetric) and background keeps 0
(only differences matter). The gain is also estimated on photos the biases never saw, by 2-fold cross-fitting
over the validation photos: fit on one half, score the other. ``--write`` stores the biases in the model
folder's ``config.json`` (``face_parser_class_log_bias``), which ``FaceParser`` applies; stock loaders ignore it.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from face_parser.labels import LabelScheme
from face_parser.modeling import CLASS_LOG_BIAS_KEY, FaceParser, named_class_log_bias
from face_parser.postprocess import resized_log_scores
from model_training.evaluate import add_scoring_arguments, open_scoring
from model_training.metrics import IGNORE_INDEX, paired_differences, summary_figures

GRID = np.round(np.arange(-2.0, 4.001, 0.25), 2)  # candidate log-biases: a class's score times 0.14 .. 55
REACH = float(GRID.max() - GRID.min())  # the most any class can gain on another within the grid


@dataclass
class Contested:
    """Validation photos reduced to what the biases can change. A pixel whose best class leads every other by
    more than :data:`REACH` in log score keeps its label under any biases on the grid: those are counted once,
    in ``fixed``; the others (boundaries, mostly) keep their log scores. Ignored pixels are dropped."""

    fixed: np.ndarray  # (N, K, K) confusion counts of the settled pixels of each photo
    logs: torch.Tensor  # (S, K) float32 log scores of the contested pixels
    truths: torch.Tensor  # (S,) their true classes
    photos: torch.Tensor  # (S,) which photo each comes from

    @property
    def classes(self) -> int:
        return self.fixed.shape[1]

    def counts(self, photos: torch.Tensor, truths: torch.Tensor, preds: torch.Tensor, rows: int = 1) -> np.ndarray:
        """``(rows, N, K, K)`` counts of (photo, truth, prediction) triples; ``preds`` may be ``(rows, S')``."""
        n, k = len(self.fixed), self.classes
        index = (photos * k + truths) * k + preds.reshape(rows, -1)
        index = index + torch.arange(rows)[:, None] * n * k * k
        return torch.bincount(index.reshape(-1), minlength=rows * n * k * k).reshape(rows, n, k, k).numpy()

    def subset(self, photos: Sequence[int]) -> Contested:
        """These photos only, renumbered in the order given."""
        renumber = torch.full((len(self.fixed),), -1, dtype=torch.long)
        renumber[torch.as_tensor(photos)] = torch.arange(len(photos))
        keep = renumber[self.photos] >= 0
        return Contested(self.fixed[list(photos)], self.logs[keep], self.truths[keep], renumber[self.photos[keep]])


def collect(parser: FaceParser, dataset, indices: Sequence[int], flip: bool = False,
            extra_sizes: Sequence[int] = ()) -> Contested:
    """Score each photo as the evaluation does (label maps at its mask's size) and keep its contested pixels."""
    parts = []
    for i in tqdm(indices, desc="score"):
        image, truth_hw = dataset[i]
        scores = parser.score_images([image], flip, extra_sizes)[0]
        parts.append(contested_part(resized_log_scores(scores[None], truth_hw.shape)[0],
                                    torch.from_numpy(np.ascontiguousarray(truth_hw))))
    return stack_parts(parts)


def contested_part(log_khw: torch.Tensor, truth_hw: torch.Tensor) -> tuple[np.ndarray, torch.Tensor, torch.Tensor]:
    """One photo's log scores and mask -> its settled pixels' ``(K, K)`` counts, and its contested pixels'
    ``(S, K)`` log scores and ``(S,)`` classes (see :class:`Contested`)."""
    k = log_khw.shape[0]
    log_pk, truth = log_khw.float().flatten(1).T, truth_hw.long().reshape(-1)
    keep = truth != IGNORE_INDEX
    log_pk, truth = log_pk[keep], truth[keep]
    top = log_pk.topk(2, dim=1).values
    open_ = top[:, 0] - top[:, 1] <= REACH
    settled = torch.bincount(truth[~open_] * k + log_pk[~open_].max(1).indices, minlength=k * k)
    return settled.reshape(k, k).numpy(), log_pk[open_], truth[open_]


def stack_parts(parts: Sequence[tuple[np.ndarray, torch.Tensor, torch.Tensor]]) -> Contested:
    """:func:`contested_part` of each photo -> one :class:`Contested`, photos numbered in order."""
    photos = [torch.full((len(truth),), n, dtype=torch.long) for n, (_, _, truth) in enumerate(parts)]
    return Contested(np.stack([fixed for fixed, _, _ in parts]), torch.cat([logs for _, logs, _ in parts]),
                     torch.cat([truth for _, _, truth in parts]), torch.cat(photos))


def matrices_with(pixels: Contested, bias: np.ndarray) -> np.ndarray:
    """``(N, K, K)``: each photo's confusion matrix when ``bias`` is added to the log scores."""
    preds = (pixels.logs + torch.as_tensor(bias, dtype=torch.float32)).max(1).indices
    return pixels.fixed + pixels.counts(pixels.photos, pixels.truths, preds)[0]


def figures(matrices_nkk: np.ndarray) -> dict[str, float]:
    """Per-image F and the pooled 18- and 19-class means of these photos."""
    return {name: float(v[0]) for name, v in summary_figures(matrices_nkk, np.ones((1, len(matrices_nkk)))).items()}


def objective(matrices_nkk: np.ndarray) -> float:
    """The mean of per-image F and the pooled 18-class F1: what the biases maximise."""
    values = figures(matrices_nkk)
    return (values["per_image_f"] + values["mean_f1_foreground"]) / 2


def bias_groups(labels: LabelScheme) -> list[list[int]]:
    """The classes that share a bias: each mirror pair together, every other class but background alone."""
    paired = {i for pair in labels.mirror_pairs() for i in pair}
    groups = [list(pair) for pair in labels.mirror_pairs()]
    return groups + [[i] for i in range(1, len(labels)) if i not in paired]


def grid_matrices(pixels: Contested, bias: np.ndarray, group: list[int]) -> np.ndarray:
    """``(len(GRID), N, K, K)``: the confusion matrices with ``group``'s bias set to each grid value.

    A pixel goes to the group's best class when its log score plus the bias beats every other class's biased
    one: one margin per pixel decides it for every grid value. Only the pixels whose margin lies inside the
    grid's range can change, so only they are counted once per value."""
    inside = torch.zeros(pixels.classes, dtype=torch.bool)
    inside[group] = True
    shift = torch.as_tensor(np.where(inside.numpy(), 0.0, bias), dtype=torch.float32)
    biased = pixels.logs + shift
    own, rest = biased[:, inside].max(1), biased[:, ~inside].max(1)
    own_id, rest_id = torch.nonzero(inside)[:, 0][own.indices], torch.nonzero(~inside)[:, 0][rest.indices]
    margin = own.values - rest.values  # the group's class wins where margin > -bias
    values = torch.as_tensor(GRID, dtype=torch.float32)
    swing = (margin > -values.max()) & (margin <= -values.min())
    settled = torch.where(margin > -values.min(), own_id, rest_id)[~swing]
    base = pixels.fixed + pixels.counts(pixels.photos[~swing], pixels.truths[~swing], settled)[0]
    preds = torch.where(margin[swing][None] > -values[:, None], own_id[swing][None], rest_id[swing][None])
    return base[None] + pixels.counts(pixels.photos[swing], pixels.truths[swing], preds, rows=len(GRID))


def fit_bias(pixels: Contested, labels: LabelScheme, rounds: int = 3) -> np.ndarray:
    """``(K,)`` log-biases by coordinate ascent over :data:`GRID`, one group at a time, until a round changes
    nothing. A value replaces the current one only if it scores higher (flat stretches keep the current)."""
    bias = np.zeros(len(labels))  # 0 is a grid value, and so is every value it takes
    groups = bias_groups(labels)
    for round_ in range(rounds):
        changed = False
        for group in tqdm(groups, desc=f"fit, round {round_ + 1}", leave=False):
            scores = [objective(m) for m in grid_matrices(pixels, bias, group)]
            best, current = int(np.argmax(scores)), int(np.flatnonzero(GRID == bias[group[0]])[0])
            if scores[best] > scores[current] + 1e-6:
                bias[group], changed = GRID[best], True
        if not changed:
            break
    return bias


def cross_fitted(pixels: Contested, labels: LabelScheme, seed: int = 0) -> np.ndarray:
    """``(N, K, K)``: each photo's confusion matrix under biases fit on the other half of the photos only."""
    order = np.random.default_rng(seed).permutation(len(pixels.fixed))
    halves = [sorted(order[: len(order) // 2]), sorted(order[len(order) // 2:])]
    out = np.zeros_like(pixels.fixed)
    for fit_on, score_on in (halves, halves[::-1]):
        out[score_on] = matrices_with(pixels.subset(score_on), fit_bias(pixels.subset(fit_on), labels))
    return out


def write_bias(model_dir: Path, labels: LabelScheme, bias: np.ndarray) -> None:
    """Store the biases in the folder's ``config.json`` (a key stock loaders ignore), weights untouched."""
    config_file = model_dir / "config.json"
    config = json.loads(config_file.read_text())
    config[CLASS_LOG_BIAS_KEY] = named_class_log_bias(labels, bias)
    config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_scoring_arguments(ap)
    ap.add_argument("--out", default="reports/calibrate")
    ap.add_argument("--write", action="store_true",
                    help="store the biases fit on every validation photo in the model folder's config.json")
    args = ap.parse_args(argv)
    parser, base, indices = open_scoring(args, "val")
    parser.class_log_bias = None  # fit against the raw model, whatever the folder carries now
    pixels = collect(parser, base, indices, args.flip, args.tta_sizes)
    labels = parser.labels
    raw = matrices_with(pixels, np.zeros(len(labels)))
    held_out = cross_fitted(pixels, labels)
    bias = fit_bias(pixels, labels)
    fitted = matrices_with(pixels, bias)
    report = {"model_version": parser.version, "images": len(indices), "flip": args.flip,
              "tta_sizes": args.tta_sizes, "lr_convention_fixed": args.fix_lr_convention,
              "class_log_bias": {name: float(b) for name, b in zip(labels.names, bias, strict=True)},
              "figures": {name: {k: round(v, 4) for k, v in figures(m).items()}
                          for name, m in (("raw", raw), ("cross_fitted", held_out), ("in_sample", fitted))},
              "cross_fitted_vs_raw": paired_differences(held_out, raw),
              "in_sample_vs_raw": paired_differences(fitted, raw), "contested_pixels": len(pixels.truths)}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2))
    if args.write:
        write_bias(Path(args.model), labels, bias)
        print(f"wrote {CLASS_LOG_BIAS_KEY} to {Path(args.model) / 'config.json'}")
    print(json.dumps({k: report[k] for k in ("class_log_bias", "figures", "cross_fitted_vs_raw", "in_sample_vs_raw")}))
    return report


if __name__ == "__main__":
    main()
