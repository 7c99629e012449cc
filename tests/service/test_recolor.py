"""service.recolor on synthetic photos and probability maps (no model): where, how much, and what is kept."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from service.recolor import ColorRequest, blend, guided_filter, parse_hex_color, recolor, refine_matte

SIZE = 160
CENTER = (80, 80)


def textured_photo(seed=0, base=(90, 60, 40)) -> np.ndarray:
    """Brown, strand-like texture (stripes + noise) everywhere: recolouring must keep it."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    stripes = 18 * np.sin(xx / 2.0 + yy / 7.0)
    noise = rng.normal(0, 10, (SIZE, SIZE))
    img = np.array(base, np.float32)[None, None] + (stripes + noise)[..., None]
    return np.clip(img, 0, 255).astype(np.uint8)


def radial(radius_full: float, radius_zero: float, center=CENTER) -> np.ndarray:
    """Probability 1 inside ``radius_full``, linear falloff, 0 beyond ``radius_zero``."""
    yy, xx = np.mgrid[:SIZE, :SIZE]
    r = np.hypot(yy - center[0], xx - center[1])
    return np.clip((radius_zero - r) / (radius_zero - radius_full), 0, 1).astype(np.float32)


def rgb01(img: np.ndarray) -> np.ndarray:
    """The guide the service refines mattes against: float32 RGB in [0, 1]."""
    return img.astype(np.float32) / 255.0


def distance_from(center=CENTER) -> np.ndarray:
    yy, xx = np.mgrid[:SIZE, :SIZE]
    return np.hypot(yy - center[0], xx - center[1])


def gray(img: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0


def mean_hue_deg(img: np.ndarray, where: np.ndarray) -> float:
    hsv = cv2.cvtColor(img.astype(np.float32) / 255.0, cv2.COLOR_RGB2HSV)
    angles = np.deg2rad(hsv[..., 0][where])
    weights = hsv[..., 1][where]  # circular mean weighted by saturation
    return float(np.rad2deg(np.arctan2((weights * np.sin(angles)).sum(), (weights * np.cos(angles)).sum())) % 360)


def hue_distance(a: float, b: float) -> float:
    return abs((a - b + 180) % 360 - 180)


def laplacian_energy(img: np.ndarray, where: np.ndarray) -> float:
    lap = cv2.Laplacian(gray(img), cv2.CV_32F, ksize=3)
    return float((lap[where] ** 2).mean())


def test_parse_hex_color():
    assert parse_hex_color("#c81e3c") == (200, 30, 60)
    assert parse_hex_color(" #FFFFFF ") == (255, 255, 255)
    for bad in ("c81e3c", "#c81e3", "#c81e3c0", "#gg0000", "red", "", "#-10000", "#+a0000", "# a0000", "#0x1234"):
        with pytest.raises(ValueError, match="#RRGGBB"):
            parse_hex_color(bad)


def test_blend_leaves_alpha_zero_pixels_bit_for_bit():
    photo = textured_photo()
    recolored = np.full(photo.shape, 250.0, np.float32)
    alpha = np.zeros(photo.shape[:2], np.float32)
    alpha[:, 80:] = 0.5
    out = blend(photo, recolored, alpha)
    np.testing.assert_array_equal(out[:, :80], photo[:, :80])
    expected = np.round(photo[:, 80:].astype(np.float32) * 0.5 + 125.0)
    assert np.abs(out[:, 80:].astype(np.float32) - expected).max() <= 1


def test_guided_filter_keeps_a_constant_and_stays_in_range():
    guide = gray(textured_photo())
    np.testing.assert_allclose(guided_filter(guide, np.full_like(guide, 0.4), 2), 0.4, atol=1e-4)
    out = guided_filter(guide, radial(30, 40), 3)
    assert out.min() >= 0 and out.max() <= 1


def test_refine_matte_cuts_the_faint_tail():
    prob = np.full((SIZE, SIZE), 0.1, np.float32)  # a faint tail everywhere: would tint the skin
    prob[60:100, 60:100] = 0.95
    matte = refine_matte(prob, rgb01(textured_photo()))
    assert (matte[:40] == 0).all()
    assert (matte[70:90, 70:90] == 1).all()


@pytest.mark.parametrize("target", [(30, 80, 220), (200, 30, 170), (40, 170, 60)], ids=["blue", "magenta", "green"])
def test_hair_recolour_moves_hue_keeps_texture_and_leaves_the_rest_untouched(target):
    photo = textured_photo(seed=1)
    prob = radial(40, 48)
    out = recolor(photo, {"hair": prob}, lips=None, hair=ColorRequest(target, 1.0))
    assert out.shape == photo.shape and out.dtype == np.uint8

    matte = refine_matte(prob, rgb01(photo))
    outside = matte <= 0
    assert outside.sum() > SIZE * SIZE / 2
    np.testing.assert_array_equal(out[outside], photo[outside])  # bit for bit
    assert (distance_from() > 55).sum() and np.array_equal(out[distance_from() > 55], photo[distance_from() > 55])

    core = distance_from() < 32
    target_hue = mean_hue_deg(np.array([[target]], np.uint8), np.ones((1, 1), bool))
    assert hue_distance(mean_hue_deg(photo, core), target_hue) > 60  # the test can fail
    assert hue_distance(mean_hue_deg(out, core), target_hue) < 10

    assert laplacian_energy(out, core) >= 0.85 * laplacian_energy(photo, core)


def test_intensity_scales_the_change():
    photo = textured_photo(seed=2)
    prob = {"hair": radial(40, 48)}
    core = distance_from() < 32
    full = recolor(photo, prob, None, ColorRequest((30, 80, 220), 1.0)).astype(np.float32)
    half = recolor(photo, prob, None, ColorRequest((30, 80, 220), 0.5)).astype(np.float32)
    none = recolor(photo, prob, None, ColorRequest((30, 80, 220), 0.0))
    np.testing.assert_array_equal(none, photo)
    expected_half = (photo.astype(np.float32) + full) / 2
    assert np.abs(half[core] - expected_half[core]).max() <= 1.0
    assert np.abs(full[core] - photo[core]).mean() > 20


def test_lips_only_changes_lips_but_not_teeth_or_hair():
    photo = textured_photo(seed=3, base=(170, 90, 90))
    lips = radial(30, 36)
    mouth = np.zeros_like(lips)
    mouth[74:86, 60:100] = 1.0  # teeth across the middle of the lips
    lips[74:86, 60:100] = 0.0
    hair = radial(10, 12, center=(20, 20))
    probs = {"u_lip": lips, "l_lip": np.zeros_like(lips), "mouth": mouth, "hair": hair}
    out = recolor(photo, probs, lips=ColorRequest((200, 20, 120), 1.0), hair=None)
    np.testing.assert_array_equal(out[77:83, 66:94], photo[77:83, 66:94])  # teeth kept
    np.testing.assert_array_equal(out[:35, :35], photo[:35, :35])  # hair not asked for
    lip_core = (distance_from() < 26) & ~((np.mgrid[:SIZE, :SIZE][0] >= 70) & (np.mgrid[:SIZE, :SIZE][0] < 90))
    assert np.abs(out[lip_core].astype(int) - photo[lip_core].astype(int)).mean() > 10


def test_hair_only_leaves_lips_alone_and_both_change_both():
    photo = textured_photo(seed=4)
    probs = {"hair": radial(20, 24, center=(40, 40)), "u_lip": radial(15, 18, center=(120, 120))}
    hair_only = recolor(photo, probs, lips=None, hair=ColorRequest((230, 200, 40), 1.0))
    lips_region = (slice(100, 140), slice(100, 140))
    hair_region = (slice(30, 50), slice(30, 50))
    np.testing.assert_array_equal(hair_only[lips_region], photo[lips_region])
    assert not np.array_equal(hair_only[hair_region], photo[hair_region])
    both = recolor(photo, probs, lips=ColorRequest((200, 20, 120), 1.0), hair=ColorRequest((230, 200, 40), 1.0))
    assert not np.array_equal(both[lips_region], photo[lips_region])
    np.testing.assert_array_equal(both[hair_region], hair_only[hair_region])


def test_no_probability_means_no_change():
    photo = textured_photo(seed=5)
    out = recolor(photo, {}, lips=ColorRequest((255, 0, 0), 1.0), hair=ColorRequest((0, 0, 255), 1.0))
    np.testing.assert_array_equal(out, photo)


def test_refine_matte_does_not_spread_the_probability_ramp_onto_skin():
    """The upsampled probability ramps over tens of pixels; the matte stops where the model's decision does."""
    photo = textured_photo(seed=6)
    photo[:, 84:] = (225, 180, 150)  # skin right of the hair
    xx = np.mgrid[:SIZE, :SIZE][1]
    prob = np.clip((114 - xx) / 60.0, 0, 1).astype(np.float32)  # 0.5 at x = 84, still 0.2 at x = 102
    matte = refine_matte(prob, rgb01(photo))
    assert (prob[:, 100] > 0.15).all()  # a threshold on the probability itself would tint this skin
    assert (matte[:, 90:] == 0).all()
    assert (matte[:, :70] == 1).all()


def test_refine_matte_follows_a_colour_edge_that_grey_levels_cannot_see():
    """Lips and skin of equal grey level: the colour guide still puts the matte's edge on the border."""
    rng = np.random.default_rng(7)
    photo = np.zeros((SIZE, SIZE, 3), np.float32)
    photo[:, :80] = (200, 70, 90)  # lip red, grey level ~111
    photo[:, 80:] = (120, 110, 100)  # skin, grey level ~112
    photo = np.clip(photo + rng.normal(0, 2, photo.shape), 0, 255).astype(np.uint8)
    assert abs(gray(photo)[:, :80].mean() - gray(photo)[:, 80:].mean()) < 0.01
    prob = np.zeros((SIZE, SIZE), np.float32)
    prob[:, :81] = 1.0  # the model's border is 1 px into the skin
    matte = refine_matte(prob, rgb01(photo))
    assert (matte[:, :80] > 0.9).all()  # a grey guide blurs the edge both ways: ~0.77 at x = 79
    assert matte[:, 80].mean() < 0.4 and matte[:, 81:].max() < 0.1


def test_dark_hair_with_highlights_turned_blonde_keeps_its_strands():
    """Shifting dark hair's tone up by ~60 L would clip its highlights flat; the roll-off keeps them."""
    photo = textured_photo(seed=8, base=(40, 28, 22)).astype(np.float32)
    yy = np.mgrid[:SIZE, :SIZE][0]
    photo += (110 * np.exp(-((yy - 70) / 8.0) ** 2))[..., None]  # a sheen band across the hair
    photo = np.clip(photo, 0, 255).astype(np.uint8)
    prob = radial(40, 48)
    blonde = (230, 200, 140)
    out = recolor(photo, {"hair": prob}, lips=None, hair=ColorRequest(blonde, 1.0))
    core = distance_from() < 32
    sheen = core & (np.abs(yy - 70) < 8)
    assert laplacian_energy(out, core) >= 0.85 * laplacian_energy(photo, core)
    assert laplacian_energy(out, sheen) >= 0.85 * laplacian_energy(photo, sheen)
    lightness = cv2.cvtColor(out, cv2.COLOR_RGB2LAB)[..., 0].astype(np.float32) * 100 / 255
    assert lightness[core].mean() > 65  # it did get light
    target_hue = mean_hue_deg(np.array([[blonde]], np.uint8), np.ones((1, 1), bool))
    assert hue_distance(mean_hue_deg(out, core), target_hue) < 10


def test_subsampled_guided_filter_is_close_to_the_full_one():
    guide = rgb01(textured_photo(seed=9))
    src = radial(40, 48)
    full = guided_filter(guide, src, 4, 1e-4)
    fast = guided_filter(guide, src, 4, 1e-4, subsample=2)
    assert fast.shape == full.shape
    assert np.abs(fast - full).mean() < 0.02


def lit_lips() -> tuple[np.ndarray, np.ndarray]:
    """Red lips (an ellipse) with a soft highlight on the lower half, on textured skin; and their probability."""
    rng = np.random.default_rng(5)
    yy, xx = np.mgrid[:SIZE, :SIZE].astype(np.float32)
    photo = np.array((205, 160, 140), np.float32) + rng.normal(0, 3, (SIZE, SIZE, 1))
    lips = ((xx - 80) / 40) ** 2 + ((yy - 80) / 16) ** 2 <= 1
    shine = 70 * np.exp(-(((xx - 88) / 9) ** 2 + ((yy - 86) / 4) ** 2))
    photo[lips] = (np.array((150, 40, 55), np.float32) + shine[..., None] + rng.normal(0, 3, (SIZE, SIZE, 1)))[lips]
    return np.clip(photo, 0, 255).astype(np.uint8), lips.astype(np.float32)


def highlight_contrast(img: np.ndarray, where: np.ndarray) -> float:
    """Mean of the brightest 5% minus the median, in CIE L (the figure of the lip finish benchmark)."""
    lightness = cv2.cvtColor(img, cv2.COLOR_RGB2LAB)[..., 0][where].astype(np.float32)
    return float(lightness[lightness >= np.percentile(lightness, 95)].mean() - np.median(lightness))


def test_lip_finishes_rescale_the_photos_own_highlights_and_nothing_outside():
    photo, prob = lit_lips()
    inner = cv2.erode(prob.astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool)
    contrast = {finish: highlight_contrast(
        recolor(photo, {"u_lip": prob}, ColorRequest((180, 30, 90), 1.0, finish), None), inner)
        for finish in ("natural", "matte", "satin", "gloss")}
    assert contrast["matte"] < 0.5 * contrast["natural"], contrast
    assert contrast["natural"] < contrast["satin"] < contrast["gloss"], contrast
    assert contrast["gloss"] > 1.5 * contrast["natural"], contrast
    far = distance_from() > 50
    for finish in ("matte", "gloss"):
        out = recolor(photo, {"u_lip": prob}, ColorRequest((180, 30, 90), 1.0, finish), None)
        np.testing.assert_array_equal(out[far], photo[far])


def test_gloss_moves_no_highlight_onto_flat_lips():
    """The finish works with the photo's lighting: lips without a highlight get none."""
    photo, prob = lit_lips()
    flat = photo.copy()
    flat[prob > 0] = (150, 40, 55)
    natural = recolor(flat, {"u_lip": prob}, ColorRequest((180, 30, 90), 1.0), None)
    gloss = recolor(flat, {"u_lip": prob}, ColorRequest((180, 30, 90), 1.0, "gloss"), None)
    assert np.abs(natural.astype(int) - gloss.astype(int)).max() <= 2
