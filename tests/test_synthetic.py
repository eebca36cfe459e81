"""The embedded default data: deterministic, labelled by lesion presence, distractors in both classes; the cartoon
default frozen by golden hashes; every regime with both anatomies."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

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


# --- the cartoon default is frozen: hashes recorded from the generator before the realistic anatomy was added ---

GOLDEN_DRAWS = {  # sha256 of 5 draws (label 0, 1, 1 without lesions, 1 without token, 0 without token) at 64²
    "lesions/64/0": "628a1dd47a9b3c8aad5df19343d5c08ab69c465d398c648106093a2f84bcd331",
    "lesions/64/1": "641d44c9df300ea06de7718694550877c73bc9f77fead2f641082c373e95c1b3",
    "lesions/64/2": "ac4bc0f1ce5d968f3a1109ac163a5a2a78f829b2f6221f0446bb104a4a6d39e4",
    "lesions/64/3": "931ed8ba76746e2347a3fadd137abaaa2f6cc03f4c3ffd822d438703c5faa7d8",
    "shortcut/64/0": "64c5dea748e23b00f06a392679ff2b7f6165fce4e5b8a3b00d30e312ab586c03",
    "shortcut/64/1": "a89b5193233cee9e1cb9c095f4fa53c894fb8603ec7b9f35e94a4371fe893f1d",
    "shortcut/64/2": "08b6092e7da451fb976e58e9cb250090bc71425c60aea1b62957e729f6418810",
    "shortcut/64/3": "53d1067fa2ee3381ec6c37f0ab08426a96622bf511fe8c31f1c71f7d4d7f9a27",
    "mixed/64/0": "cfa43a5830414de02946caaeaea6c00e5fdd953bc1ffa8093a422d0e8f4f9328",
    "mixed/64/1": "a0772b7247320f62a21236a706b40d7fd80f6599e6447314bb9037580de7f63d",
    "mixed/64/2": "bb592cd4001689fbcf63cdaa0477f3c982adcb3b3e495dc3d35130b487106ed0",
    "mixed/64/3": "544cb9818dc986b076dd8d532ba5270a9ab5cb633cdaeace090ddc1d13b4129c",
}
GOLDEN_PNGS = {  # sha256 over the PNG files of a 4/2/2 data set at 48², seed 1
    "lesions": "972af5f00a1108476bd7625264ab44908098d230322ad414f6644929d1c5436f",
    "shortcut": "87a8b0373fa08d5b1421e19237be41d516c59f023c5d60d382895e4de92bb317",
    "mixed": "75d9d3dbbd913dcf9bc11e07ddafc421377269920f3d57e3d3f0fa4c9c18f668",
}


def _draws_hash(draw, seed):
    h = hashlib.sha256()
    for label, kw in ((0, {}), (1, {}), (1, {"lesions": False}), (1, {"token": False}), (0, {"token": False})):
        image, mask = draw(np.random.default_rng([seed, 7]), label, **kw)
        h.update(image.tobytes())
        h.update(mask.tobytes())
    return h.hexdigest()


@pytest.mark.parametrize("regime", ["lesions", "shortcut", "mixed"])
def test_cartoon_default_is_byte_identical(regime, tmp_path):
    for explicit in (False, True):
        kwargs = {"anatomy": "cartoon"} if explicit else {}
        draw = SyntheticChestXray(size=64, regime=regime, **kwargs)
        for seed in range(4):
            assert _draws_hash(draw, seed) == GOLDEN_DRAWS[f"{regime}/64/{seed}"], (regime, seed)
    make_synthetic_dataset(tmp_path, num_train=4, num_val=2, num_test=2, size=48, seed=1, regime=regime)
    h = hashlib.sha256()
    for f in sorted(tmp_path.rglob("*.png")):
        if f.relative_to(tmp_path).parts[0] == "counterfactuals":  # the mixed regime's additions since 0.7.0
            continue
        h.update(str(f.relative_to(tmp_path)).encode())
        h.update(f.read_bytes())
    assert h.hexdigest() == GOLDEN_PNGS[regime]


# --- every regime, both anatomies ---

ALL = [(a, r) for a in SyntheticChestXray.ANATOMIES for r in SyntheticChestXray.REGIMES]


@pytest.mark.parametrize("anatomy,regime", ALL)
def test_every_regime_deterministic_with_masks_for_positives(anatomy, regime):
    draw = SyntheticChestXray(size=48, regime=regime, anatomy=anatomy)
    for i in range(4):
        first = draw.draw(np.random.default_rng([5, i]), 1)
        again = draw.draw(np.random.default_rng([5, i]), 1)
        assert np.array_equal(first[0], again[0]) and np.array_equal(first[1], again[1])
        image, mask, info = first
        assert image.shape == mask.shape == (48, 48) and image.dtype == np.float32 and mask.dtype == np.uint8
        assert 0.0 <= image.min() and image.max() <= 1.0 and set(np.unique(mask)) <= {0, 1}
        assert mask.any() and mask.mean() < 0.3, (anatomy, regime, i)
        assert (info["finding"] is None) == (regime == "shortcut")
        negative, neg_mask, neg_info = draw.draw(np.random.default_rng([5, i]), 0)
        assert not neg_mask.any() and neg_info["finding"] is None and not neg_info["token"]
    other = draw(np.random.default_rng([6, 0]), 1)[0]
    assert not np.array_equal(other, draw(np.random.default_rng([5, 0]), 1)[0])


def _dilate(mask, steps):
    m = mask.astype(bool)
    for _ in range(steps):
        d = m.copy()
        d[1:] |= m[:-1]
        d[:-1] |= m[1:]
        d[:, 1:] |= m[:, :-1]
        d[:, :-1] |= m[:, 1:]
        m = d
    return m


@pytest.mark.parametrize("anatomy,regime", [x for x in ALL if x[1] != "shortcut"])
def test_lesion_counterfactual_differs_only_around_the_lesion(anatomy, regime):
    """Same draws without the lesions: the images differ near the mask only (the realistic anatomy blurs and edge-
    enhances after the lesion is drawn, so "near" is a few pixels) and most of the difference is on the mask."""
    draw = SyntheticChestXray(size=64, regime=regime, anatomy=anatomy)
    for i in range(5):
        image, mask, info = draw.draw(np.random.default_rng([2, i]), 1)
        without, mask2, info2 = draw.draw(np.random.default_rng([2, i]), 1, lesions=False)
        token_free = draw.draw(np.random.default_rng([2, i]), 1, token=False)[0]
        assert np.array_equal(mask, mask2) and info["finding"] == info2["finding"]
        diff = np.abs(image - without)
        if info["token"]:  # the token is drawn in both: compare the token-free pair instead
            diff = np.abs(token_free - draw.draw(np.random.default_rng([2, i]), 1, lesions=False, token=False)[0])
        assert diff.sum() > 0, (anatomy, regime, i)
        assert diff[~_dilate(mask, 12)].max() < 1e-5, (anatomy, regime, i)  # float32/64 rounding only
        assert diff[_dilate(mask, 3)].sum() >= 0.7 * diff.sum(), (anatomy, regime, i)


@pytest.mark.parametrize("anatomy", SyntheticChestXray.ANATOMIES)
def test_token_counterfactual_differs_only_on_the_token(anatomy):
    draw = SyntheticChestXray(size=64, regime="shortcut", anatomy=anatomy)
    for i in range(5):
        image, mask, info = draw.draw(np.random.default_rng([3, i]), 1)
        without, _, _ = draw.draw(np.random.default_rng([3, i]), 1, token=False)
        diff = image != without
        assert info["token"] and diff.any() and not diff[mask == 0].any()
        neg, neg_mask, _ = draw.draw(np.random.default_rng([3, i]), 0)
        assert np.array_equal(neg, draw(np.random.default_rng([3, i]), 0, token=False)[0]) and not neg_mask.any()
    mixed = SyntheticChestXray(size=64, regime="mixed", anatomy=anatomy, token_fraction=1.0)
    image, mask, info = mixed.draw(np.random.default_rng([3, 0]), 1)
    diff = image != mixed(np.random.default_rng([3, 0]), 1, token=False)[0]
    assert info["token"] and 0 < diff.mean() < 0.02  # a small square, not the lesions


def test_realistic_anatomy_sanity():
    """Lungs dark, mediastinum bright, air outside the body black; findings inside the lungs; devices and text in
    both classes (the same seed gives the same patient and devices whatever the label)."""
    draw = SyntheticChestXray(size=96, regime="lesions", anatomy="realistic")
    kinds = set()
    for i in range(12):
        image, mask, info = draw.draw(np.random.default_rng([4, i]), 1)
        lungs, mediastinum = info["lungs"].astype(bool), info["mediastinum"].astype(bool)
        assert 0.1 < lungs.mean() < 0.45 and mediastinum.any()
        assert image[lungs].mean() + 0.15 < image[mediastinum].mean()
        assert image[:5, :5].mean() < image[lungs].mean()  # the top corners are air beside the neck
        inside = (mask.astype(bool) & _dilate(lungs, 2)).sum() / mask.sum()
        assert inside > 0.95, (i, info["finding"], inside)
        kinds.add(info["finding"])
        negative, _, neg_info = draw.draw(np.random.default_rng([4, i]), 0)
        assert np.array_equal(neg_info["lungs"], info["lungs"])
        assert np.abs(negative - image)[~_dilate(mask, 12)].max() < 1e-4  # same patient, devices, text, noise
    assert kinds == {"consolidation", "nodules", "pneumothorax"}
    boxes = SyntheticChestXray(size=96, regime="boxes", anatomy="realistic")
    for i in range(6):  # a boxes mask is one filled rectangle or the union of two
        _, mask, _ = boxes.draw(np.random.default_rng([4, i]), 1)
        rows, cols = np.nonzero(mask.any(1))[0], np.nonzero(mask.any(0))[0]
        hull = mask[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
        assert hull.all() or len(np.unique(mask.sum(1))) <= 4 + 1


@pytest.mark.parametrize("anatomy", SyntheticChestXray.ANATOMIES)
def test_size_224_every_regime(anatomy):
    for regime in SyntheticChestXray.REGIMES:
        image, mask = SyntheticChestXray(size=224, regime=regime, anatomy=anatomy)(np.random.default_rng([0, 1]), 1)
        assert image.shape == mask.shape == (224, 224) and mask.any() and 0 <= image.min() <= image.max() <= 1


def test_nodule_sizes_are_radiological():
    """Nodules of 8-30 mm on a ~400 mm field: each one's mask a disc of 2-8 % of the image side across."""
    draw = SyntheticChestXray(size=224, regime="nodules", anatomy="realistic")
    for i in range(6):
        _, mask = draw(np.random.default_rng([9, i]), 1)
        area = mask.sum()
        diameter_fraction = 2 * np.sqrt(area / np.pi) / 224
        assert 0.015 < diameter_fraction < 0.15, diameter_fraction  # 1-3 nodules


def test_mixed_datalist_has_token_field_and_loads(tmp_path):
    from scripts.data.datalist import load_datalist

    path = make_synthetic_dataset(tmp_path, num_train=8, num_val=2, num_test=2, size=32, regime="mixed",
                                  anatomy="realistic", token_fraction=0.5)
    data = json.loads(path.read_text())
    entries = [e for split in ("training", "validation", "test") for e in data[split]]
    assert all(isinstance(e["token"], bool) for e in entries)
    assert not any(e["token"] for e in entries if e["label"] == 0)
    loaded = load_datalist(path, tmp_path, "training", num_classes=2, require_masks=True)
    assert [e["token"] for e in loaded] == [e["token"] for e in data["training"]]
    plain = json.loads(make_synthetic_dataset(tmp_path / "p", num_train=2, num_val=2, num_test=2, size=32).read_text())
    assert all("token" not in e for e in plain["training"])


def test_cli_realistic(tmp_path, monkeypatch, capsys):
    from scripts.data import synthetic

    monkeypatch.setattr("sys.argv", ["synthetic", "--out", str(tmp_path / "d"), "--num-train", "4", "--num-val", "2",
                                     "--num-test", "2", "--size", "32", "--regime", "pneumothorax",
                                     "--anatomy", "realistic"])
    synthetic.main()
    assert "8 images" in capsys.readouterr().out
    data = json.loads((tmp_path / "d" / "datalist.json").read_text())
    assert sum(e["label"] for e in data["training"]) == 2
    with pytest.raises(ValueError, match="anatomy"):
        SyntheticChestXray(anatomy="photo")
    with pytest.raises(ValueError, match="regime"):
        SyntheticChestXray(regime="tumour")
