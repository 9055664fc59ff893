"""DSB 2018 nuclei reader: a small folder written here, and the real subset in ../shared/data."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from custom.data import EMDataError
from custom.data.datasets import dsb2018_ids, load_dsb2018_nuclei, split_ids
from custom.metrics import instance_metrics


def _write_sample(root, image_id: str, rgba: bool) -> np.ndarray:
    folder = root / "dsb2018_nuclei" / "stage1_train" / image_id
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    pixels = np.zeros((20, 30, 4 if rgba else 1), np.uint8)
    pixels[..., :3] = 40
    pixels[2:8, 3:9, :3] = 200
    pixels[10:18, 15:25, :3] = 180
    if rgba:
        pixels[..., 3] = 255
    Image.fromarray(pixels if rgba else pixels[..., 0]).save(folder / "images" / f"{image_id}.png")
    truth = np.zeros((20, 30), np.int32)
    for k, box in enumerate([(slice(2, 8), slice(3, 9)), (slice(10, 18), slice(15, 25))], start=1):
        mask = np.zeros((20, 30), np.uint8)
        mask[box] = 255
        truth[box] = k
        Image.fromarray(mask).save(folder / "masks" / f"m{k}.png")
    return truth


def test_reader_builds_instance_labels_from_mask_files(tmp_path):
    truth = _write_sample(tmp_path, "b_id", rgba=True)
    _write_sample(tmp_path, "a_id", rgba=False)
    assert dsb2018_ids(tmp_path) == ["a_id", "b_id"]
    image, labels = load_dsb2018_nuclei(tmp_path, "b_id")
    assert image.shape == labels.shape == (20, 30) and image.dtype == np.float32 and image.max() <= 1.0
    assert instance_metrics(labels, truth)["ap"] == 1.0


def test_split_is_deterministic_and_disjoint():
    ids = [f"id{i:03d}" for i in range(50)]
    train, test = split_ids(ids, 0.8, seed=0)
    assert (len(train), len(test)) == (40, 10) and not set(train) & set(test)
    assert split_ids(list(reversed(ids)), 0.8, seed=0) == (train, test)


def test_missing_dataset_says_how_to_get_it(tmp_path):
    with pytest.raises(EMDataError, match="download=True"):
        dsb2018_ids(tmp_path)


@pytest.mark.realdata
def test_real_subset_has_166_images_with_one_label_per_mask_file(shared_data):
    ids = dsb2018_ids(shared_data)
    assert len(ids) == 166
    image, labels = load_dsb2018_nuclei(shared_data, ids[0])
    n_masks = len(list((shared_data / "dsb2018_nuclei" / "stage1_train" / ids[0] / "masks").glob("*.png")))
    assert labels.max() == n_masks and len(np.unique(labels)) - 1 == n_masks
    assert image.shape == labels.shape
