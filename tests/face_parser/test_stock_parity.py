"""The exported folder is a stock HF model: stock loading and preprocessing agree with ours, and so does stock
post-processing on the score grid."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoImageProcessor, AutoModelForUniversalSegmentation
from transformers.models.maskformer.modeling_maskformer import MaskFormerForInstanceSegmentationOutput

from face_parser.labels import CELEBAMASK_HQ_SCHEME, LabelScheme
from face_parser.modeling import FaceParser, build_model, init_backbone
from face_parser.postprocess import class_probabilities, label_map, semantic_scores
from face_parser.preprocess import PreprocessConfig, to_pixel_values
from tests.conftest import TINY_INPUT, draw_face


@pytest.mark.parametrize("folder", ["tiny_model_dir", "tiny_m2f_dir"])
def test_stock_preprocessing_matches_ours(request, folder):
    tiny_model_dir = request.getfixturevalue(folder)
    image, _ = draw_face(150, seed=3)
    processor = AutoImageProcessor.from_pretrained(tiny_model_dir)
    stock_pixels = processor(images=[image], return_tensors="pt")["pixel_values"]
    ours = to_pixel_values([image], PreprocessConfig.from_processor_dict(processor.to_dict()))
    assert stock_pixels.shape == ours.shape == (1, 3, TINY_INPUT, TINY_INPUT)
    torch.testing.assert_close(stock_pixels, ours, atol=2e-2, rtol=0)


def test_stock_postprocess_matches_ours_on_the_score_grid(tiny_model_dir):
    """The class scores are stock; only resizing differs, on purpose (log space: ``face_parser.postprocess``).
    Mask2Former's stock post-processing resizes its masks to 384 px first, so MaskFormer's is the reference.
    Random logits, not the tiny model's: an untrained model answers one class everywhere."""
    processor = AutoImageProcessor.from_pretrained(tiny_model_dir)
    torch.manual_seed(0)
    out = MaskFormerForInstanceSegmentationOutput(class_queries_logits=torch.randn(2, 19, 20) * 3,
                                                  masks_queries_logits=torch.randn(2, 19, 24, 24) * 3)
    stock = torch.stack(processor.post_process_semantic_segmentation(out))
    mine = label_map(semantic_scores(out.class_queries_logits, out.masks_queries_logits))
    assert stock.shape == mine.shape == (2, 24, 24) and len(stock.unique()) > 10
    np.testing.assert_array_equal(stock.numpy(), mine.numpy())


def test_a_mask2former_folder_loads_as_one_and_parses(tiny_m2f_dir):
    parser = FaceParser.load(tiny_m2f_dir, device="cpu")
    assert type(parser.model).__name__ == "Mask2FormerForUniversalSegmentation"
    assert parser.labels == CELEBAMASK_HQ_SCHEME and parser.version == "tiny-m2f-test"
    image, _ = draw_face(150, seed=4)
    (scores,) = parser.score_images([image])
    assert scores.shape == (len(CELEBAMASK_HQ_SCHEME), TINY_INPUT // 4, TINY_INPUT // 4)


def test_a_backbone_carries_over_into_a_mask2former(tiny_model_dir):
    """``--init_backbone_from``: a trained MaskFormer's backbone starts a Mask2Former's; any other is refused."""
    model = build_model("tiny-m2f", CELEBAMASK_HQ_SCHEME)
    init_backbone(model, tiny_model_dir)
    source = AutoModelForUniversalSegmentation.from_pretrained(tiny_model_dir, dtype=torch.float32)
    theirs = source.model.pixel_level_module.encoder.state_dict()
    for name, tensor in model.model.pixel_level_module.encoder.state_dict().items():
        torch.testing.assert_close(tensor, theirs[name])
    with pytest.raises(ValueError, match="tiny-model.*does not fit"):
        init_backbone(build_model("small-m2f", CELEBAMASK_HQ_SCHEME), tiny_model_dir)


def test_class_probabilities_sum_to_one_and_keep_argmax():
    torch.manual_seed(0)
    scores = semantic_scores(torch.randn(2, 19, 20), torch.randn(2, 19, 8, 8))
    probs = class_probabilities(scores, size=(32, 32))
    torch.testing.assert_close(probs.sum(1), torch.ones(2, 32, 32))
    assert torch.equal(probs.argmax(1).to(torch.uint8), label_map(scores, size=(32, 32)))


def test_labels_travel_with_the_model(tiny_parser):
    assert tiny_parser.labels == CELEBAMASK_HQ_SCHEME
    assert tiny_parser.labels.id_of("hair") == 13
    perm = CELEBAMASK_HQ_SCHEME.flip_permutation()
    assert perm[4] == 5 and perm[5] == 4 and perm[8] == 9 and perm[13] == 13
    assert LabelScheme.from_id2label({"0": "a", "1": "b"}).names == ("a", "b")
