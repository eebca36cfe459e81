"""The embedded default data: deterministic, labelled by lesion presence, distractors in both classes."""

from __future__ import annotations

import json

import numpy as np

from scripts.data.synthetic import SyntheticChestXray, ensure_synthetic_dataset, make_synthetic_dataset


def test_same_seed_same_images_independent_of_count(tmp_path):
    a = make_synthetic_dataset(tmp_path / "a", num_train=6, num_val=2, num_test=2, size=48, seed=3)
    b = make_synthetic_dataset(tmp_path / "b", num_train=6, num_val=2, num_test=2, size=48, seed=3)
    assert json.loads(a.read_text()) == json.loads(b.read_text())
    for name in ("images/00000.png", "images/00009.png", "masks/00004.png"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    draw = SyntheticChestXray(size=48)
    first = draw(np.random.default_rng([3, 5]), 1)
    again = draw(np.random.default_rng([3, 5]), 1)
    assert np.array_equal(first[0], again[0]) and np.array_equal(first[1], again[1])
    other = draw(np.random.default_rng([4, 5]), 1)
    assert not np.array_equal(first[0], other[0])


def test_lesions_only_in_pathology_class_and_inside_range():
    draw = SyntheticChestXray(size=64)
    for i in range(20):
        for label in (0, 1):
            image, mask = draw(np.random.default_rng([0, i]), label)
            assert image.dtype == np.float32 and 0.0 <= image.min() and image.max() <= 1.0
            assert set(np.unique(mask)) <= {0, 1}
            assert bool(mask.any()) == (label == 1)
            if label == 1:
                assert mask.mean() < 0.2  # lesions are local findings


def test_distractors_do_not_depend_on_the_label():
    """Distractor draws come from the same generator state whatever the label: both classes carry them."""
    draw = SyntheticChestXray(size=64, distractor_rate=3.0)
    bright = [[], []]
    for i in range(30):
        for label in (0, 1):
            image, mask = draw(np.random.default_rng([1, i]), label)
            bright[label].append(float((image * (1 - mask) > 0.85).mean()))
    assert np.mean(bright[0]) > 0 and np.mean(bright[1]) > 0
    assert abs(np.mean(bright[0]) - np.mean(bright[1])) < 0.5 * max(np.mean(bright[0]), np.mean(bright[1]))


def test_splits_balanced_and_first_use_only(tmp_path):
    path = make_synthetic_dataset(tmp_path / "d", num_train=10, num_val=4, num_test=4, size=32)
    datalist = json.loads(path.read_text())
    for split, n in (("training", 10), ("validation", 4), ("test", 4)):
        labels = [e["label"] for e in datalist[split]]
        assert len(labels) == n and sum(labels) == n // 2
    user = tmp_path / "user"
    user.mkdir()
    (user / "scan.dcm").write_bytes(b"x")
    ensure_synthetic_dataset(user, user / "datalist.json")
    assert not (user / "datalist.json").exists()  # a user's folder is never filled with synthetic data
