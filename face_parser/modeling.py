"""Build, load and save the parser: a stock Hugging Face MaskFormer (or Mask2Former).

Everything here produces or consumes a standard ``save_pretrained`` folder, so
``AutoModelForUniversalSegmentation.from_pretrained(folder)`` loads it with no
project code. Only safetensors weights are ever read (no pickle).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import (
    AutoModelForUniversalSegmentation,
    DetrConfig,
    Mask2FormerConfig,
    MaskFormerConfig,
    MaskFormerImageProcessorPil,
    MaskFormerSwinConfig,
    PreTrainedModel,
    ResNetConfig,
)
from transformers.utils import cached_file

from face_parser.labels import LabelScheme
from face_parser.postprocess import log_scores, resized, semantic_scores
from face_parser.preprocess import PreprocessConfig, normalise, stack_rgb

_STAGES = ["stage1", "stage2", "stage3", "stage4"]
# transformers' @strict config dataclasses pass extra keywords (out_features, num_queries) on to
# __post_init__(**kwargs); their generated __init__ signature does not list them: hence the ignores below.


def _small_config(labels: LabelScheme, num_queries: int | None) -> MaskFormerConfig:
    """ResNet-18-like backbone, 128-wide FPN and a 4-layer decoder: ~13.6M parameters, CPU friendly.

    Dropout is off: MaskFormer's decoder starts every query from zeros, and with
    dropout the queries learn to depend on the noise and collapse in ``eval()``.
    """
    queries = num_queries or len(labels)
    backbone = ResNetConfig(  # type: ignore[call-arg]
        embedding_size=64, hidden_sizes=[64, 128, 256, 512], depths=[2, 2, 2, 2],
        layer_type="basic", out_features=_STAGES,
    )
    decoder = DetrConfig(
        d_model=128, decoder_layers=4, decoder_attention_heads=4, decoder_ffn_dim=512,
        encoder_layers=1, dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
        num_queries=queries,
    )
    return MaskFormerConfig(  # type: ignore[call-arg]
        backbone_config=backbone, decoder_config=decoder, fpn_feature_size=128,
        mask_feature_size=128, num_queries=queries, use_auxiliary_loss=False,
        id2label=labels.id2label, label2id=labels.label2id,
    )


def _small_m2f_config(labels: LabelScheme, num_queries: int | None) -> Mask2FormerConfig:
    """Mask2Former around the small preset's backbone, whose trained weights ``init_backbone`` carries over:
    its pixel decoder mixes the 1/8, 1/16 and 1/32 features with multi-scale deformable attention (context
    across scales, where the small preset's FPN only adds them up), and its decoder's masked attention makes
    each query look at its own class's pixels (on v3's backbone it reached 0.70 validation F1 in 15 CPU
    minutes, where the small preset's new decoder reached 0.60: README, "Mask2Former against MaskFormer").
    ~12.7M parameters; a 384 px pass took 105-111 ms on 2 CPU cores where the small preset's took 70-82.

    ``use_auxiliary_loss`` stays on: transformers' Mask2Former reads its decoder's intermediate states in
    every forward pass and keeps them only when it is on (or hidden states are asked for).
    """
    queries = num_queries or len(labels)
    backbone = ResNetConfig(  # type: ignore[call-arg]
        embedding_size=64, hidden_sizes=[64, 128, 256, 512], depths=[2, 2, 2, 2],
        layer_type="basic", out_features=_STAGES,
    )
    return Mask2FormerConfig(
        backbone_config=backbone, feature_size=128, mask_feature_size=128, hidden_dim=128,
        encoder_feedforward_dim=512, encoder_layers=2, decoder_layers=4, num_attention_heads=4,
        dim_feedforward=512, dropout=0.0, num_queries=queries, use_auxiliary_loss=True,
        id2label=labels.id2label, label2id=labels.label2id,
    )


def _swin_base_config(labels: LabelScheme, num_queries: int | None) -> MaskFormerConfig:
    """The architecture of ``facebook/maskformer-swin-base-ade`` (~102M parameters)."""
    backbone = MaskFormerSwinConfig(  # type: ignore[call-arg]
        image_size=384, embed_dim=128, depths=[2, 2, 18, 2], num_heads=[4, 8, 16, 32],
        window_size=12, drop_path_rate=0.3, out_features=_STAGES,
    )
    decoder = DetrConfig(d_model=256, decoder_layers=6, dropout=0.0, num_queries=num_queries or 100)
    return MaskFormerConfig(  # type: ignore[call-arg]
        backbone_config=backbone, decoder_config=decoder, fpn_feature_size=256,
        mask_feature_size=256, num_queries=num_queries or 100, use_auxiliary_loss=False,
        id2label=labels.id2label, label2id=labels.label2id,
    )


def _tiny_config(labels: LabelScheme, num_queries: int | None) -> MaskFormerConfig:
    """A few hundred thousand parameters: for tests and smoke runs, not for faces."""
    queries = num_queries or len(labels)
    backbone = ResNetConfig(embedding_size=8, hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1],  # type: ignore[call-arg]
                            layer_type="basic", out_features=_STAGES)
    decoder = DetrConfig(d_model=32, decoder_layers=1, decoder_attention_heads=2, decoder_ffn_dim=64,
                         encoder_layers=1, dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
                         num_queries=queries)
    return MaskFormerConfig(backbone_config=backbone, decoder_config=decoder, fpn_feature_size=32,  # type: ignore[call-arg]
                            mask_feature_size=32, num_queries=queries, use_auxiliary_loss=False,
                            id2label=labels.id2label, label2id=labels.label2id)


def _tiny_m2f_config(labels: LabelScheme, num_queries: int | None) -> Mask2FormerConfig:
    """The tiny preset's backbone in a Mask2Former: for tests and smoke runs."""
    backbone = ResNetConfig(embedding_size=8, hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1],  # type: ignore[call-arg]
                            layer_type="basic", out_features=_STAGES)
    return Mask2FormerConfig(backbone_config=backbone, feature_size=32, mask_feature_size=32, hidden_dim=32,
                             encoder_feedforward_dim=64, encoder_layers=1, decoder_layers=2, num_attention_heads=2,
                             dim_feedforward=64, dropout=0.0, num_queries=num_queries or len(labels),
                             use_auxiliary_loss=True, id2label=labels.id2label, label2id=labels.label2id)


PRESETS = {"tiny": _tiny_config, "small": _small_config, "swin-base": _swin_base_config,
           "tiny-m2f": _tiny_m2f_config, "small-m2f": _small_m2f_config}


def build_model(preset: str, labels: LabelScheme, num_queries: int | None = None) -> PreTrainedModel:
    """A randomly initialised MaskFormer or Mask2Former of a named preset."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    return AutoModelForUniversalSegmentation.from_config(PRESETS[preset](labels, num_queries))


def init_backbone(model: PreTrainedModel, folder: str) -> None:
    """Start ``model``'s backbone from a trained model folder's (a MaskFormer's or a Mask2Former's with the
    same backbone config): a new decoder then learns on features that already know faces."""
    source = AutoModelForUniversalSegmentation.from_pretrained(folder, use_safetensors=True, dtype=torch.float32)
    try:
        model.model.pixel_level_module.encoder.load_state_dict(source.model.pixel_level_module.encoder.state_dict())
    except RuntimeError as exc:  # a different backbone: say which folder, not only which tensors
        raise ValueError(f"{folder}: its backbone does not fit this model's: {exc}") from exc


def deepen_backbone(model: PreTrainedModel, depths: Sequence[int]) -> PreTrainedModel:
    """A copy of ``model`` whose ResNet stages have ``depths`` residual blocks, computing the same function.

    The new blocks go at the end of each stage with their last batch norm's scale and shift at zero, so
    each one adds nothing to its residual and starts as the identity (the block's input is a ReLU's output,
    which its closing ReLU leaves unchanged). Training then starts from the trained model's own quality
    and grows into the extra depth, instead of learning a deeper backbone from scratch.
    """
    config = model.config
    backbone = config.backbone_config
    if getattr(backbone, "model_type", None) != "resnet" or backbone.layer_type != "basic":
        raise ValueError("only a basic-block ResNet backbone can be deepened")
    old = list(backbone.depths)
    if len(depths) != len(old) or any(new < was for new, was in zip(depths, old, strict=True)):
        raise ValueError(f"depths {list(depths)} must keep {len(old)} stages and each at least {old}")
    config = type(config).from_dict(config.to_dict())
    config.backbone_config.depths = list(depths)
    deeper = type(model)(config)
    unexpected = deeper.load_state_dict(model.state_dict(), strict=False).unexpected_keys
    if unexpected:
        raise ValueError(f"weights that do not fit the deeper model: {unexpected[:3]}")
    stages = deeper.model.pixel_level_module.encoder.encoder.stages
    for stage, was, now in zip(stages, old, depths, strict=True):
        for block in list(stage.layers)[was:now]:
            last = block.layer[-1].normalization
            torch.nn.init.zeros_(last.weight)
            torch.nn.init.zeros_(last.bias)
    return deeper


def init_from_pretrained(name_or_path: str, labels: LabelScheme) -> PreTrainedModel:
    """Load a pretrained MaskFormer/Mask2Former (folder or hub id) with a new head for ``labels``; a class
    calibration the folder carries is dropped (:func:`without_calibration`)."""
    return without_calibration(AutoModelForUniversalSegmentation.from_pretrained(
        name_or_path, id2label=labels.id2label, label2id=labels.label2id, num_labels=len(labels),
        ignore_mismatched_sizes=True, use_safetensors=True, dtype=torch.float32,
    ))


def resolve_device(device: str) -> torch.device:
    """``auto`` picks CUDA when present, else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX: the CPU multiplies bfloat16 in hardware (elsewhere oneDNN emulates it). torch's
    checks are private, so a torch without them (another build, an older image) counts as no."""
    checks = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(check() for check in checks if check is not None)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """The dtype forward passes compute in. ``auto``: float16 on CUDA (tensor cores); on a CPU bfloat16
    where it has bfloat16 instructions (on 2 AVX512-BF16 cores v3's batch-1 pass took 30 ms against 53-61 ms
    in float32: ``benchmarks.model_speed --dtype``), float32 elsewhere (emulated half floats are slow)."""
    if dtype == "auto":
        if device.type == "cuda":
            return torch.float16
        return torch.bfloat16 if device.type == "cpu" and cpu_has_native_bf16() else torch.float32
    return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[dtype]


@dataclass
class FaceParser:
    """A loaded model with its labels and preprocessing, ready for batched inference.

    ``dtype`` is what forward passes compute in. On a GPU the weights are stored in it; on a CPU they stay
    float32 and a half-float pass runs under autocast: convolutions and matmuls in half floats, the rest
    (Mask2Former's deformable sampling among them) in float32. With bfloat16 weights instead, a Mask2Former's
    batch-1 pass was slower than in float32 on the 2-core machine; under autocast it is faster.
    """

    model: PreTrainedModel
    labels: LabelScheme
    preprocess: PreprocessConfig
    version: str
    device: torch.device
    dtype: torch.dtype
    class_log_bias: torch.Tensor | None = None

    @classmethod
    def load(cls, name_or_path: str | Path, device: str = "auto", dtype: str = "auto") -> FaceParser:
        """Load a ``save_pretrained`` folder (or hub id, when online) for inference."""
        folder = Path(str(name_or_path))
        if folder.is_dir() and not (folder / "preprocessor_config.json").is_file():
            raise FileNotFoundError(f"{folder} has no preprocessor_config.json: a Trainer checkpoint? Load its run "
                                    "folder, or export it first (python -m model_training.export)")
        dev = resolve_device(device)
        dt = resolve_dtype(dtype, dev)
        model = AutoModelForUniversalSegmentation.from_pretrained(
            str(name_or_path), use_safetensors=True, dtype=torch.float32 if dev.type == "cpu" else dt
        ).to(dev).eval()
        if dev.type == "cpu":  # the batch arrives channels-last (stack_rgb); oneDNN then keeps every layer so
            model.to(memory_format=torch.channels_last)  # v3's batch-1 pass: 0.79x the time (fp32), 0.88x (bf16)
        processor_file = cached_file(str(name_or_path), "preprocessor_config.json")
        if processor_file is None:
            raise FileNotFoundError(f"{name_or_path} has no preprocessor_config.json")
        preprocess = PreprocessConfig.from_processor_dict(json.loads(Path(processor_file).read_text()))
        version = getattr(model.config, "face_parser_version", None) or Path(str(name_or_path)).name
        labels = LabelScheme.from_id2label(model.config.id2label)
        bias = class_log_bias_from_config(model.config, labels)
        return cls(model, labels, preprocess, version, dev, dt, bias)

    @torch.inference_mode()
    def scores(self, pixel_values_bchw: torch.Tensor, flip: bool = False) -> torch.Tensor:
        """One forward pass: ``(B, 3, S, S)`` float32 -> ``(B, K, S/4, S/4)`` float32 class scores on CPU.

        ``flip``: test-time augmentation. The mirrored photos go through the same pass (twice the
        work), and their scores, mirrored back with left and right classes swapped, are averaged in:
        the result is exactly mirror-symmetric, and on the test split it scored +0.005 per-image F,
        +0.008 pooled mean F1 (README, "The shipped model").
        """
        on_cpu = self.device.type == "cpu"
        pixels = pixel_values_bchw.to(self.device, torch.float32 if on_cpu else self.dtype)
        if flip:
            pixels = torch.cat([pixels, pixels.flip(-1)])
        with torch.autocast("cpu", dtype=self.dtype, enabled=on_cpu and self.dtype != torch.float32):
            out = self.model(pixel_values=pixels)
        scores = semantic_scores(out.class_queries_logits, out.masks_queries_logits).cpu()
        if not flip:
            return scores
        own, mirrored = scores.chunk(2)
        swap = torch.as_tensor(self.labels.flip_permutation().astype(np.int64))
        return (own + mirrored.flip(-1)[:, swap]) / 2

    def score_images(self, images_hwc: Sequence[np.ndarray], flip: bool = False,
                     extra_sizes: Sequence[int] = ()) -> list[torch.Tensor]:
        """RGB photos ``(H, W, 3)`` uint8 (any size: resized here, the shared preprocessing) -> one
        ``(K, S/4, S/4)`` float32 score map each, in one forward pass (see :meth:`scores` for ``flip``).

        ``extra_sizes``: test-time augmentation over scales. The photos are also scored at these input sizes,
        one more pass each, and the log scores of every size are averaged on the grid of the largest, which
        the maps then come at (the scores' geometric mean, in the space label maps are resized in). A face seen
        a little smaller and a little larger than in training votes on each pixel: on the validation split,
        320 and 448 px beside v3's own 384 added +0.004 per-image F and +0.007 pooled mean F1 to the mirror
        pass (README, "Test-time augmentation").
        """
        sizes = self.input_sizes(extra_sizes)
        if len(sizes) == 1:
            return list(self.calibrated(self.scores(self.pixel_values(images_hwc), flip)))
        logs = [log_scores(self.scores(self.pixel_values(images_hwc, size), flip)) for size in sizes]
        grid = (logs[-1].shape[-2], logs[-1].shape[-1])
        return list(self.calibrated(torch.stack([resized(one, grid) for one in logs]).mean(dim=0).exp()))

    def calibrated(self, scores_bkhw: torch.Tensor) -> torch.Tensor:
        """Scores with the model folder's class log-biases applied (``exp(bias)`` times each class's score;
        unchanged without them): the per-class prior correction ``model_training.calibrate`` fits on the
        validation split, for classes a model under- or over-predicts (README, "Class calibration")."""
        if self.class_log_bias is None:
            return scores_bkhw
        return scores_bkhw * self.class_log_bias.exp()[:, None, None]

    def input_sizes(self, extra_sizes: Sequence[int] = ()) -> list[int]:
        """The input sizes :meth:`score_images` reads with ``extra_sizes``, smallest first: the model's own and
        the extra ones. Photos handed to it at the last are never enlarged."""
        return sorted({self.preprocess.size, *extra_sizes})

    def pixel_values(self, images_hwc: Sequence[np.ndarray], size: int | None = None) -> torch.Tensor:
        """RGB photos -> the model's input (at its own size unless ``size``) on its device. The batch goes
        there as uint8 and is normalised there (on a GPU: a quarter of the bytes to copy, and no float work
        on the CPU)."""
        return normalise(stack_rgb(images_hwc, size or self.preprocess.size).to(self.device), self.preprocess)


CLASS_LOG_BIAS_KEY = "face_parser_class_log_bias"  # config.json: {class name: log-bias}; stock loaders ignore it


def without_calibration(model: PreTrainedModel) -> PreTrainedModel:
    """``model`` with no class log-biases in its config: they were fitted to the weights they were written with
    (``model_training.calibrate --write``), and a model trained or averaged from those would apply them silently."""
    if hasattr(model.config, CLASS_LOG_BIAS_KEY):
        delattr(model.config, CLASS_LOG_BIAS_KEY)
    return model


def class_log_bias_from_config(config, labels: LabelScheme) -> torch.Tensor | None:
    """The ``(K,)`` class log-biases a model folder's config carries (classes it does not name: 0), or None."""
    named = getattr(config, CLASS_LOG_BIAS_KEY, None)
    if not named:
        return None
    unknown = sorted(set(named) - set(labels.names))
    if unknown:
        raise ValueError(f"{CLASS_LOG_BIAS_KEY} names classes the model does not have: {unknown}")
    return torch.tensor([float(named.get(name, 0.0)) for name in labels.names])


def named_class_log_bias(labels: LabelScheme, bias: torch.Tensor | np.ndarray | None) -> dict[str, float]:
    """``{class name: log-bias}`` of the classes not at 0 (none without biases): what a config carries,
    the inverse of :func:`class_log_bias_from_config`."""
    if bias is None:
        return {}
    return {name: float(b) for name, b in zip(labels.names, bias.tolist(), strict=True) if b}


def save_model_folder(
    model: PreTrainedModel, preprocess: PreprocessConfig, out_dir: str | Path,
    version: str, fp16: bool = True,
) -> Path:
    """Write a stock HF folder: config (with ``id2label``), safetensors weights, processor config."""
    if preprocess.size % 32:
        raise ValueError(f"input size {preprocess.size} px: a stock image processor pads to a multiple of 32 "
                         "(size_divisor) and would feed the model another picture than the project does")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.config.face_parser_version = version
    if model.config.model_type == "maskformer":  # Mask2Former needs it at inference (_small_m2f_config)
        model.config.use_auxiliary_loss = False
    id2label = model.config.id2label
    if not id2label:
        raise ValueError("the model config has no id2label: build the model with build_model()")
    to_save = model.half() if fp16 else model
    to_save.save_pretrained(out, safe_serialization=True)
    model.float()
    processor = MaskFormerImageProcessorPil(num_labels=len(id2label), **preprocess.to_processor_dict())
    processor.save_pretrained(out)
    for weights in out.glob("*.safetensors"):
        # transformers writes weights owner-only (0600): a container's non-root user could not load them
        weights.chmod(0o644)
    return out
