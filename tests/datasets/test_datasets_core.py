"""Kvasir-SEG, DSB2018 (both layouts), DRIVE readers; splits; the input pipeline."""

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from keras_sl import datasets
from keras_sl.data.normalization import IMAGENET, normalize
from keras_sl.datasets import DSB2018, DRIVE, KvasirSEG, SegmentationLoader, deterministic_split

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"


def _save(path: Path, array, **kw):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, dtype="uint8")).save(path, **kw)


def test_kvasir_reader_binarises_noisy_jpeg_masks(tmp_path):
    for i in range(5):
        _save(tmp_path / "images" / f"k{i}.jpg", np.full((20, 24, 3), 40 * i))
        mask = np.zeros((20, 24), "uint8")
        mask[5:15, 4:12] = 255
        _save(tmp_path / "masks" / f"k{i}.jpg", mask, quality=70)
    _save(tmp_path / "images" / "orphan.jpg", np.zeros((4, 4, 3)))  # no mask: skipped
    ds = KvasirSEG(tmp_path)
    assert [s.id for s in ds.samples] == [f"k{i}" for i in range(5)]
    image, mask = ds.load(ds.samples[0])
    assert image.shape == (20, 24, 3) and image.dtype == np.uint8
    assert mask.shape == (20, 24, 1) and mask.dtype == np.float32
    assert set(np.unique(mask)) == {0.0, 1.0}
    assert abs(int(mask.sum()) - 80) <= 4  # JPEG noise stays on its side of 128
    train, test = ds.split("train"), ds.split("test")
    assert len(test) == 1 and len(train) == 4  # 120/1000 of 5 images, rounded
    assert {s.id for s in train}.isdisjoint(s.id for s in test)


def test_dsb2018_official_layout_merges_instances(tmp_path):
    root = tmp_path / "stage1_train"
    for i in range(3):
        case = root / f"case{i}"
        _save(case / "images" / f"case{i}.png", np.zeros((16, 16, 4)))  # RGBA
        for j in range(2):
            m = np.zeros((16, 16))
            m[j * 8 : j * 8 + 4, 2:6] = 255
            _save(case / "masks" / f"nucleus{j}.png", m)
    ds = DSB2018(tmp_path)
    assert len(ds) == 3
    image, mask = ds.load(ds.samples[1])
    assert image.shape == (16, 16, 3)
    assert int(mask.sum()) == 32  # two 4x4 nuclei merged


def test_dsb2018_resized_layout(tmp_path):
    for i in range(4):
        _save(tmp_path / "images" / f"d{i}.png", np.zeros((8, 8, 3)))
        m = np.zeros((8, 8))
        m[:2] = 200  # interpolated grey >= 128 counts as nucleus
        m[2:4] = 100
        _save(tmp_path / "masks" / "0" / f"d{i}.png", m)
    ds = DSB2018(tmp_path)
    assert len(ds) == 4 and int(ds.load(ds.samples[0])[1].sum()) == 16


def test_drive_official_split(tmp_path):
    for part, nums in (("training", (21, 22)), ("test", (1, 2, 3))):
        for n in nums:
            _save(tmp_path / part / "images" / f"{n:02d}_{part}.tif", np.zeros((10, 10, 3)))
            _save(tmp_path / part / "1st_manual" / f"{n:02d}_manual1.gif", np.eye(10) * 255)
            _save(tmp_path / part / "mask" / f"{n:02d}_{part}_mask.gif", np.ones((10, 10)) * 255)
    ds = DRIVE(tmp_path)
    assert [s.id for s in ds.split("train")] == ["training_21", "training_22"]
    assert len(ds.split("test")) == 3
    assert int(ds.load(ds.samples[0])[1].sum()) == 10
    assert "fov" in ds.samples[0].extra


def test_missing_dataset_says_where_to_put_files(tmp_path):
    with pytest.raises(datasets.DatasetNotFoundError, match="masks/<id>.jpg"):
        KvasirSEG(tmp_path / "nothing")
    with pytest.raises(ValueError, match="available"):
        datasets.get("no_such_set", tmp_path)


def test_deterministic_split_is_stable():
    ids = [f"id{i:04d}" for i in range(1000)]
    train, test = deterministic_split(ids, 120, seed=2025)
    assert len(train) == 880 and len(test) == 120
    assert deterministic_split(list(reversed(ids)), 120, seed=2025) == (train, test)
    # pinned: the same on every machine, NumPy version and backend
    assert hashlib.sha256(",".join(test).encode()).hexdigest()[:16] == "35322c0146b077f0"
    assert test[:3] == ['id0030', 'id0039', 'id0049']


@pytest.mark.data
@pytest.mark.parametrize("name,folder,n_test,digest", [
    ("kvasir", "kvasir-seg", 120, "b1b4289282d905a5"),
    ("dsb2018", "dsb2018-96", 70, "600a9fec3e91c996"),
])
def test_real_splits_are_pinned(name, folder, n_test, digest):
    root = SHARED / folder
    if not root.is_dir():
        pytest.skip(f"real data not found at {root} (../shared/data is only on development machines)")
    ds = datasets.get(name, root)
    test = [s.id for s in ds.split("test")]
    assert len(test) == n_test and len(ds.split("train")) == len(ds) - n_test
    assert hashlib.sha256(",".join(test).encode()).hexdigest()[:16] == digest


def test_pipeline_shapes_augmentation_and_normalisation(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(5):
        _save(tmp_path / "images" / f"p{i}.png", rng.integers(0, 255, (30 + i, 40, 3)))
        m = np.zeros((30 + i, 40))
        m[:10] = 255
        _save(tmp_path / "masks" / f"p{i}.png", m)
    ds = KvasirSEG(tmp_path)
    plain = SegmentationLoader(ds, ds.samples, batch_size=2, image_size=(32, 32), normalization=IMAGENET)
    assert len(plain) == 3
    x, y = plain[0]
    assert x.shape == (2, 32, 32, 3) and y.shape == (2, 32, 32, 1)
    assert plain[2][0].shape == (1, 32, 32, 3)
    # normalisation round trip: undo it and get the resized uint8 image back
    img = np.asarray(Image.fromarray(ds.load(ds.samples[0])[0]).resize((32, 32), Image.BILINEAR))
    back = (x[0] * np.array(IMAGENET["std"]) + np.array(IMAGENET["mean"])) * 255
    np.testing.assert_allclose(back, img, atol=1e-3)
    np.testing.assert_allclose(normalize(img[None], IMAGENET)[0], x[0], atol=1e-6)
    aug = SegmentationLoader(ds, ds.samples, batch_size=5, image_size=(32, 32), augment=True, seed=1)
    shapes = set()
    for epoch in range(4):
        xa, ya = aug[0]
        shapes.add(xa.shape)
        assert set(np.unique(ya)) <= {0.0, 1.0}
        aug.on_epoch_end()
    assert shapes == {(5, 32, 32, 3)}  # zoom keeps one batch shape
    again = SegmentationLoader(ds, ds.samples, batch_size=5, image_size=(32, 32), augment=True, seed=1)
    np.testing.assert_array_equal(again[0][0], SegmentationLoader(
        ds, ds.samples, batch_size=5, image_size=(32, 32), augment=True, seed=1)[0][0])
    with pytest.raises(ValueError, match="different sizes"):
        SegmentationLoader(ds, ds.samples, batch_size=5, image_size=None)[0]
