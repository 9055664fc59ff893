"""Overlay figures: errors in colour on full-resolution crops where the objects are."""

from __future__ import annotations

import numpy as np

from custom.visualize import FALSE_NEGATIVE, FALSE_POSITIVE, PREDICTED, TRUE_POSITIVE, crop_box, error_colours, save_overlay_png


def test_crop_box_finds_the_window_with_the_most_foreground():
    mask = np.zeros((300, 400), bool)
    mask[10:20, 10:20] = True  # a small object
    mask[200:260, 300:380] = True  # the larger one
    ys, xs = crop_box(mask, 100)
    assert (ys.stop - ys.start, xs.stop - xs.start) == (100, 100)
    assert mask[ys, xs].sum() == mask[200:260, 300:380].sum()
    assert crop_box(mask[:50, :60], 100) == (slice(0, 50), slice(0, 60))  # a section smaller than the window


def test_error_colours_mark_true_false_positives_and_false_negatives():
    prediction = np.array([[1, 1, 0, 0]], bool)
    truth = np.array([[1, 0, 1, 0]], bool)
    rgba = error_colours(prediction, truth)
    assert tuple(rgba[0, 0, :3]) == TRUE_POSITIVE and tuple(rgba[0, 1, :3]) == FALSE_POSITIVE and tuple(rgba[0, 2, :3]) == FALSE_NEGATIVE
    assert rgba[0, 3, 3] == 0  # true negatives stay transparent
    assert tuple(error_colours(prediction, None)[0, 0, :3]) == PREDICTED


def test_overlay_png_shows_crops_at_full_resolution(tmp_path):
    import matplotlib.image

    rng = np.random.default_rng(0)
    image = rng.random((4, 512, 600)).astype(np.float32)
    truth = np.zeros(image.shape, bool)
    truth[:, 100:180, 200:260] = True
    prediction = np.roll(truth, 10, axis=2)
    path = save_overlay_png(tmp_path / "o.png", image, {"a": prediction, "b": truth}, truth, sections=[0, 3], title="t", crop=128)
    height, width = matplotlib.image.imread(path).shape[:2]
    assert width >= 3 * 128 and height >= 2 * 128  # three panels per row, two rows, no downsampling of the crops
