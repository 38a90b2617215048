"""Depth dataset readers (real on-disk layouts in tiny fixtures) and the download helper."""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import json
import re
import socket
import tarfile
import threading
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io
from PIL import Image

from keras_sl.datasets.base import DatasetNotFoundError
from keras_sl.datasets.cityscapes import Cityscapes
from keras_sl.datasets.depth import DepthDataset, resize_nearest, sanitize_depth
from keras_sl.datasets.diode import DIODE
from keras_sl.datasets.download import DownloadError, download
from keras_sl.datasets.kitti import KITTI
from keras_sl.datasets.make3d import Make3D
from keras_sl.datasets.modest import MODEST
from keras_sl.datasets.nyu_depth_v2 import NYUDepthV2
from keras_sl.datasets.seven_scenes import SevenScenes

REAL_7SCENES = Path(__file__).resolve().parents[3] / "shared" / "data" / "7scenes-redkitchen"
ALL_READERS = [Cityscapes, Make3D, DIODE, KITTI, NYUDepthV2, MODEST, SevenScenes]


# -- fixture helpers -------------------------------------------------------------------
def rgb(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def save_rgb(path: Path, h: int, w: int, seed: int) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    a = rgb(h, w, seed)
    Image.fromarray(a).save(path)
    return a


def save_u16(path: Path, values: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    a = np.asarray(values, dtype=np.uint16)
    Image.fromarray(a).save(path)
    with Image.open(path) as im:  # the fixture itself must round-trip losslessly
        assert np.array_equal(np.asarray(im), a)


def check_pair(ds: DepthDataset, sample, hw: tuple[int, int]):
    image, depth = ds.load(sample)
    assert image.dtype == np.uint8 and image.shape == hw + (3,)
    assert depth.dtype == np.float32 and depth.shape == hw + (1,)
    assert np.all(np.isfinite(depth)) and depth.min() >= 0.0
    return image, depth


def check_split(ds, n_test: int):
    train, test = ds.split("train"), ds.split("test")
    train_ids, test_ids = [s.id for s in train], [s.id for s in test]
    assert len(test_ids) == n_test
    assert not set(train_ids) & set(test_ids)
    assert sorted(train_ids + test_ids) == sorted(s.id for s in ds.samples)
    again = type(ds)(ds.root)
    assert [s.id for s in again.split("test")] == test_ids
    return train_ids, test_ids


# -- shared decoding ---------------------------------------------------------------------
def test_sanitize_depth_zeroes_every_invalid_kind():
    d = np.array([[1.5, np.nan, np.inf], [-np.inf, -2.0, 0.0], [9.0, 4.0, 2.0]])
    sentinel = np.zeros((3, 3), bool)
    sentinel[2, 2] = True
    out = sanitize_depth(d, sentinel, max_depth=5.0)
    assert out.dtype == np.float32 and out.shape == (3, 3, 1)
    assert out[..., 0].tolist() == [[1.5, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 4.0, 0.0]]


def test_resize_nearest_copies_values_exactly():
    a = np.array([[1.0, 0.0], [2.5, 3.0]], dtype=np.float32)[..., None]
    out = resize_nearest(a, (4, 6))
    assert out.shape == (4, 6, 1)
    assert set(np.unique(out).tolist()) == {0.0, 1.0, 2.5, 3.0}
    assert out[0, 0, 0] == 1.0 and out[0, 5, 0] == 0.0 and out[3, 0, 0] == 2.5 and out[3, 5, 0] == 3.0


@pytest.mark.parametrize("cls", ALL_READERS, ids=lambda c: c.name)
def test_missing_data_messages_show_layout(cls, tmp_path):
    assert cls.task == "depth" and cls.name and cls.layout and cls.homepage
    with pytest.raises(DatasetNotFoundError) as err:
        cls(tmp_path / "absent")
    assert "does not exist" in str(err.value) and cls.layout in str(err.value) and cls.name in str(err.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetNotFoundError) as err:
        cls(tmp_path / "empty")
    assert "no samples found" in str(err.value) and cls.layout in str(err.value)


# -- Cityscapes ----------------------------------------------------------------------------
def make_cityscapes(root: Path) -> dict:
    frames = {
        "train": [("aachen", "000000", "000019"), ("aachen", "000001", "000019"), ("bochum", "000000", "000313")],
        "val": [("frankfurt", "000000", "000294"), ("frankfurt", "000001", "000058")],
    }
    images = {}
    cameras = {"aachen": (0.2, 1000.0), "bochum": (0.25, 2000.0), "frankfurt": (0.2, 1000.0)}
    disparity = np.array([[0, 1, 257, 2561, 513, 257]] * 4)
    for k, (part, items) in enumerate(frames.items()):
        for j, (city, seq, frame) in enumerate(items):
            base = f"{city}_{seq}_{frame}"
            images[base] = save_rgb(root / "leftImg8bit" / part / city / f"{base}_leftImg8bit.png", 4, 6, 10 * k + j)
            save_u16(root / "disparity" / part / city / f"{base}_disparity.png", disparity)
            cam = root / "camera" / part / city / f"{base}_camera.json"
            cam.parent.mkdir(parents=True, exist_ok=True)
            baseline, fx = cameras[city]
            cam.write_text(json.dumps({
                "extrinsic": {"baseline": baseline, "pitch": 0.038, "roll": 0.0, "x": 1.7, "y": 0.1, "yaw": -0.02, "z": 1.18},
                "intrinsic": {"fx": fx, "fy": fx, "u0": 3.0, "v0": 2.0},
            }))
    # A frame without its camera file cannot be converted to depth: skipped.
    save_rgb(root / "leftImg8bit" / "train" / "aachen" / "aachen_000002_000019_leftImg8bit.png", 4, 6, 99)
    save_u16(root / "disparity" / "train" / "aachen" / "aachen_000002_000019_disparity.png", disparity)
    return images


def test_cityscapes_reads_official_layout(tmp_path):
    images = make_cityscapes(tmp_path)
    ds = Cityscapes(tmp_path)
    assert len(ds) == 5 and ds.name == "cityscapes"
    assert [s.id for s in ds.split("train")] == ["aachen_000000_000019", "aachen_000001_000019", "bochum_000000_000313"]
    assert [s.id for s in ds.split("test")] == ["frankfurt_000000_000294", "frankfurt_000001_000058"]
    by_id = {s.id: s for s in ds.samples}
    image, depth = check_pair(ds, by_id["aachen_000000_000019"], (4, 6))
    assert np.array_equal(image, images["aachen_000000_000019"])
    # p=0 invalid, p=1 -> d=0 invalid, p=257 -> d=1 -> 0.2*1000/1, p=2561 -> d=10, p=513 -> d=2
    np.testing.assert_allclose(depth[0, :, 0], [0.0, 0.0, 200.0, 20.0, 100.0, 200.0], rtol=1e-6)
    assert depth[0, 0, 0] == 0.0 and depth[0, 1, 0] == 0.0
    _, depth = check_pair(ds, by_id["bochum_000000_000313"], (4, 6))  # its own camera: 0.25 m, fx 2000
    np.testing.assert_allclose(depth[2, 2:4, 0], [500.0, 50.0], rtol=1e-6)


# -- Make3D -----------------------------------------------------------------------------------
def make3d_grid(value: float) -> np.ndarray:
    grid = np.full((5, 3, 4), 99.0)  # channels 1-3: X/Y/projective depth, not used
    depth = np.full((5, 3), value)
    depth[1, 1] = np.nan
    depth[2, 2] = 81.92  # beyond the scanner range (sky)
    depth[3, 0] = -1.0
    depth[4, 2] = 70.0
    grid[:, :, 3] = depth
    return grid


def make_make3d(root: Path, train: list[str], test: list[str]) -> None:
    for k, stem in enumerate(train):
        save_rgb(root / "Train400Img" / f"img-{stem}.jpg", 10, 6, k)
        (root / "Train400Depth").mkdir(parents=True, exist_ok=True)
        scipy.io.savemat(root / "Train400Depth" / f"depth_sph_corr-{stem}.mat", {"Position3DGrid": make3d_grid(12.5 + k)})
    for k, stem in enumerate(test):
        save_rgb(root / "Test134" / f"img-{stem}.jpg", 10, 6, 50 + k)
        (root / "Gridlaserdata").mkdir(parents=True, exist_ok=True)
        scipy.io.savemat(root / "Gridlaserdata" / f"depth_sph_corr-{stem}.mat", {"Position3DGrid": make3d_grid(30.0 + k)})


def test_make3d_official_folders_and_laser_grid(tmp_path):
    make_make3d(tmp_path, ["math7-p-282t0", "manmade-p-54t0", "stat-p-21t0"], ["10.21op2-p-015t000", "op1-p-108t000"])
    save_rgb(tmp_path / "Train400Img" / "img-nodepth-p-1t0.jpg", 10, 6, 77)  # no .mat: skipped
    ds = Make3D(tmp_path)
    assert len(ds) == 5
    assert [s.id for s in ds.split("test")] == ["test/10.21op2-p-015t000", "test/op1-p-108t000"]
    assert [s.id for s in ds.split("train")] == ["train/manmade-p-54t0", "train/math7-p-282t0", "train/stat-p-21t0"]
    sample = {s.id: s for s in ds.samples}["train/math7-p-282t0"]
    grid = ds.read_target(sample)
    assert grid.shape == (5, 3, 1) and grid.dtype == np.float32
    assert grid[0, 0, 0] == 12.5 and grid[4, 2, 0] == 70.0
    assert grid[1, 1, 0] == 0.0 and grid[2, 2, 0] == 0.0 and grid[3, 0, 0] == 0.0  # NaN, sky, negative
    _, depth = check_pair(ds, sample, (10, 6))  # 5x3 grid upsampled x2 to the image
    assert np.all(depth[0:2, 0:2, 0] == 12.5) and np.all(depth[2:4, 2:4, 0] == 0.0) and np.all(depth[8:, 4:, 0] == 70.0)


def test_make3d_single_folder_uses_deterministic_split(tmp_path):
    make_make3d(tmp_path, [f"scene{i}-p-{i}t0" for i in range(6)], [])
    ds = Make3D(tmp_path)
    assert len(ds) == 6 and ds.official_splits() is None
    check_split(ds, n_test=1)  # the paper's 375/50 proportion: round(6 * 50 / 425) = 1


def test_make3d_rejects_mat_without_grid(tmp_path):
    make_make3d(tmp_path, ["a-p-1t0"], [])
    scipy.io.savemat(tmp_path / "Train400Depth" / "depth_sph_corr-a-p-1t0.mat", {"Other": np.zeros((2, 2))})
    ds = Make3D(tmp_path)
    with pytest.raises(ValueError, match="Position3DGrid"):
        ds.read_target(ds.samples[0])


# -- DIODE -------------------------------------------------------------------------------------
def make_diode(root: Path) -> dict:
    frames = [
        ("train", "scene_00008", "scan_00097", "00008_00097_outdoor_000_000"),
        ("train", "scene_00008", "scan_00097", "00008_00097_outdoor_000_010"),
        ("train", "scene_00008", "scan_00098", "00008_00098_outdoor_010_020"),
        ("train", "scene_00009", "scan_00100", "00009_00100_outdoor_000_000"),
        ("val", "scene_00022", "scan_00193", "00022_00193_outdoor_000_010"),
    ]
    images = {}
    for k, (part, scene, scan, stem) in enumerate(frames):
        folder = root / part / "outdoor" / scene / scan
        images[f"{part}/{scene}/{scan}/{stem}"] = save_rgb(folder / f"{stem}.png", 3, 4, k)
        depth = np.full((3, 4, 1), 10.0 + k, dtype=np.float32)
        depth[0, 1, 0] = 7.0  # masked out below
        depth[1, 0, 0] = np.nan
        depth[1, 1, 0] = np.inf
        mask = np.ones((3, 4), dtype=np.float32)
        mask[0, 1] = 0.0
        np.save(folder / f"{stem}_depth.npy", depth)
        np.save(folder / f"{stem}_depth_mask.npy", mask)
    fork = root / "train" / "outdoor" / "scene_00008" / "scan_00097" / "._00008_00097_outdoor_000_000"
    for suffix in (".png", "_depth.npy", "_depth_mask.npy"):  # macOS resource forks: skipped
        fork.with_name(fork.name + suffix).write_bytes(b"\0\5\26\7")
    indoor = root / "train" / "indoors" / "scene_00019" / "scan_00183"  # ignored: outdoor only
    save_rgb(indoor / "00019_00183_indoors_000_010.png", 3, 4, 9)
    np.save(indoor / "00019_00183_indoors_000_010_depth.npy", np.ones((3, 4, 1), np.float32))
    np.save(indoor / "00019_00183_indoors_000_010_depth_mask.npy", np.ones((3, 4), np.float32))
    return images


def test_diode_outdoor_only_with_mask(tmp_path):
    images = make_diode(tmp_path)
    ds = DIODE(tmp_path)
    assert [s.id for s in ds.samples] == sorted(images)
    sample = ds.samples[0]
    assert sample.id == "train/scene_00008/scan_00097/00008_00097_outdoor_000_000"
    image, depth = check_pair(ds, sample, (3, 4))
    assert np.array_equal(image, images[sample.id])
    assert depth[0, 0, 0] == 10.0 and depth[2, 3, 0] == 10.0
    assert depth[0, 1, 0] == 0.0 and depth[1, 0, 0] == 0.0 and depth[1, 1, 0] == 0.0  # mask, NaN, inf
    train_ids, test_ids = check_split(ds, n_test=1)  # 80/20 of 5
    assert len(train_ids) == 4


# -- KITTI --------------------------------------------------------------------------------------
def make_kitti(root: Path) -> Path:
    folder = root / "depth_selection" / "val_selection_cropped"
    gt = np.array([[0, 256, 5120, 65535], [512, 0, 2560, 1]])
    for k, (drive, frame, cam) in enumerate([
        ("2011_09_26_drive_0002", "0000000005", "02"),
        ("2011_09_26_drive_0002", "0000000006", "02"),
        ("2011_09_26_drive_0009", "0000000010", "03"),
        ("2011_09_28_drive_0037", "0000000020", "02"),
        ("2011_10_03_drive_0047", "0000000001", "03"),
    ]):
        save_rgb(folder / "image" / f"{drive}_sync_image_{frame}_image_{cam}.png", 2, 4, k)
        save_u16(folder / "groundtruth_depth" / f"{drive}_sync_groundtruth_depth_{frame}_image_{cam}.png", gt + k)
    save_rgb(folder / "image" / "2011_09_26_drive_0001_sync_image_0000000000_image_02.png", 2, 4, 9)  # no gt
    for sub, name in (("image", "_image_"), ("groundtruth_depth", "_groundtruth_depth_")):  # macOS forks: skipped
        (folder / sub / f"._2011_09_26_drive_0002_sync{name}0000000005_image_02.png").write_bytes(b"\0\5\26\7")
    return folder


def test_kitti_depth_selection(tmp_path):
    folder = make_kitti(tmp_path)
    ds = KITTI(tmp_path)
    assert len(ds) == 5
    sample = ds.samples[0]
    assert sample.id == "2011_09_26_drive_0002_sync_image_0000000005_image_02"
    assert sample.targets[0].name == "2011_09_26_drive_0002_sync_groundtruth_depth_0000000005_image_02.png"
    _, depth = check_pair(ds, sample, (2, 4))
    np.testing.assert_allclose(depth[..., 0], [[0.0, 1.0, 20.0, 65535 / 256], [2.0, 0.0, 10.0, 1 / 256]], rtol=1e-6)
    assert depth[0, 0, 0] == 0.0 and depth[1, 1, 0] == 0.0
    check_split(ds, n_test=1)  # 800/200 proportion of 5
    for other_root in (tmp_path / "depth_selection", folder):
        assert [s.id for s in KITTI(other_root).samples] == [s.id for s in ds.samples]


# -- NYU Depth V2 ----------------------------------------------------------------------------------
NYU_H, NYU_W, NYU_N = 3, 4, 5


def nyu_frame(i: int) -> tuple[np.ndarray, np.ndarray]:
    image = rgb(NYU_H, NYU_W, 100 + i)
    depth = (np.arange(NYU_H * NYU_W, dtype=np.float32).reshape(NYU_H, NYU_W) + 1.0) * 0.25 + i
    depth[0, 3] = np.nan
    depth[2, 0] = 0.0
    return image, depth


def make_nyu_mat(root: Path, splits: bool = True, train=(1, 2, 4), test=(3, 5)) -> None:
    root.mkdir(parents=True, exist_ok=True)
    path = root / "nyu_depth_v2_labeled.mat"
    images = np.zeros((NYU_N, 3, NYU_W, NYU_H), np.uint8)  # MATLAB v7.3 order: (N, C, W, H)
    depths = np.zeros((NYU_N, NYU_W, NYU_H), np.float32)
    for i in range(NYU_N):
        image, depth = nyu_frame(i)
        images[i] = image.transpose(2, 1, 0)
        depths[i] = depth.T
    with h5py.File(path, "w", userblock_size=512) as f:
        f["images"] = images
        f["depths"] = depths
        f["rawDepths"] = depths
    with open(path, "r+b") as f:  # MATLAB's 512-byte v7.3 header in the user block
        f.write(b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan 1 00:00:00 2012 HDF5 schema 1.00 .")
    if splits:
        scipy.io.savemat(root / "splits.mat", {
            "trainNdxs": np.array(train, dtype=float)[:, None],
            "testNdxs": np.array(test, dtype=float)[:, None],
        })


def test_nyu_labeled_mat_with_official_split(tmp_path):
    make_nyu_mat(tmp_path)
    ds = NYUDepthV2(tmp_path)
    assert [s.id for s in ds.samples] == ["0001", "0002", "0003", "0004", "0005"]
    assert [s.extra["index"] for s in ds.samples] == [0, 1, 2, 3, 4]
    assert [s.id for s in ds.split("train")] == ["0001", "0002", "0004"]
    assert [s.id for s in ds.split("test")] == ["0003", "0005"]
    for i in (0, 3):
        expected_image, expected_depth = nyu_frame(i)
        image, depth = check_pair(ds, ds.samples[i], (NYU_H, NYU_W))
        assert np.array_equal(image, expected_image)  # axes transposed back, not just reshaped
        assert depth[1, 2, 0] == expected_depth[1, 2] == 0.25 * 7 + i
        assert depth[0, 0, 0] == 0.25 + i and depth[2, 3, 0] == 3.0 + i
        assert depth[0, 3, 0] == 0.0 and depth[2, 0, 0] == 0.0  # NaN and 0


def test_nyu_mat_without_splits_and_bad_files(tmp_path):
    make_nyu_mat(tmp_path / "nosplit", splits=False)
    ds = NYUDepthV2(tmp_path / "nosplit")
    assert ds.official_splits() is None
    check_split(ds, n_test=2)  # 795/654 proportion: round(5 * 654 / 1449) = 2
    make_nyu_mat(tmp_path / "badsplit", train=(1, 2, 9))
    with pytest.raises(ValueError, match="9"):
        NYUDepthV2(tmp_path / "badsplit").split("train")
    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt" / "nyu_depth_v2_labeled.mat").write_bytes(b"MATLAB 5.0 MAT-file, not HDF5")
    with pytest.raises(DatasetNotFoundError, match="HDF5") as err:
        NYUDepthV2(tmp_path / "corrupt")
    assert NYUDepthV2.layout in str(err.value)


def test_nyu_extracted_layout(tmp_path):
    depth = np.array([[0, 1500, 65535], [800, 2000, 10000]])
    frames = [("train", "bathroom_0001", "00000"), ("train", "bathroom_0001", "00001"),
              ("train", "kitchen_0003", "00017"), ("test", "bedroom", "00045"), ("test", "office", "00210")]
    for k, (part, scene, num) in enumerate(frames):
        save_rgb(tmp_path / part / scene / f"rgb_{num}.jpg", 2, 3, k)
        save_u16(tmp_path / part / scene / f"sync_depth_{num}.png", depth + k)
    ds = NYUDepthV2(tmp_path)
    assert len(ds) == 5
    assert [s.id for s in ds.split("test")] == ["test/bedroom/00045", "test/office/00210"]
    assert [s.id for s in ds.split("train")] == ["train/bathroom_0001/00000", "train/bathroom_0001/00001",
                                                 "train/kitchen_0003/00017"]
    _, d = check_pair(ds, ds.split("train")[0], (2, 3))
    np.testing.assert_allclose(d[..., 0], [[0.0, 1.5, 65.535], [0.8, 2.0, 10.0]], rtol=1e-6)
    assert d[0, 0, 0] == 0.0


# -- MODEST ---------------------------------------------------------------------------------------
def make_modest(root: Path) -> None:
    out2 = root / "out2"
    for k, (n, grey) in enumerate([(1, 51), (2, 255), (285049, 0), (385867, 102)]):
        save_rgb(out2 / "images" / f"fgbg{n}.jpg", 8, 8, k)
        (out2 / "depth").mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((8, 8), grey, np.uint8)).save(out2 / "depth" / f"fgbg{n}.jpg", quality=60)
        if n != 2:
            (out2 / "masks").mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.zeros((8, 8), np.uint8)).save(out2 / "masks" / f"mask{n}.jpg")
    save_rgb(out2 / "images" / "fgbg7.jpg", 8, 8, 7)  # no depth: skipped


def test_modest_layout_and_relative_depth(tmp_path):
    make_modest(tmp_path)
    ds = MODEST(tmp_path)
    assert [s.id for s in ds.samples] == ["fgbg1", "fgbg2", "fgbg285049", "fgbg385867"]
    by_id = {s.id: s for s in ds.samples}
    assert by_id["fgbg285049"].extra["mask"].name == "mask285049.jpg" and "mask" not in by_id["fgbg2"].extra
    for sid, metres in (("fgbg1", 2.0), ("fgbg2", 10.0), ("fgbg385867", 4.0)):
        _, depth = check_pair(ds, by_id[sid], (8, 8))
        np.testing.assert_allclose(depth, metres, atol=10 / 255 + 1e-6)
    _, depth = check_pair(ds, by_id["fgbg285049"], (8, 8))
    assert np.all(depth == 0.0)
    check_split(ds, n_test=1)  # 80/20 of 4
    assert [s.id for s in MODEST(tmp_path / "out2").samples] == [s.id for s in ds.samples]


# -- 7-Scenes -----------------------------------------------------------------------------------------
SEVEN_DEPTH = np.array([[0, 65535, 1234, 800], [4000, 2500, 30000, 1]])


def save_7scenes_frame(folder: Path, number: int, ext: str, seed: int) -> None:
    save_rgb(folder / f"frame-{number:06d}.color.{ext}", 2, 4, seed)
    save_u16(folder / f"frame-{number:06d}.depth.png", SEVEN_DEPTH + (seed % 3) * (SEVEN_DEPTH > 0) * (SEVEN_DEPTH < 65535))
    (folder / f"frame-{number:06d}.pose.txt").write_text("1 0 0 0\n0 1 0 0\n0 0 1 0\n0 0 0 1\n")


def test_seven_scenes_flat_sequence_contiguous_split(tmp_path):
    for k, number in enumerate(range(0, 20, 2)):
        save_7scenes_frame(tmp_path, number, "jpg", 3 * k)  # seed % 3 == 0: the exact values above
    (tmp_path / "camera-intrinsics.txt").write_text("585 0 320\n0 585 240\n0 0 1\n")
    ds = SevenScenes(tmp_path)
    ids = [s.id for s in ds.samples]
    assert ids == [f"frame-{n:06d}" for n in range(0, 20, 2)]
    _, depth = check_pair(ds, ds.samples[0], (2, 4))
    np.testing.assert_allclose(depth[..., 0], [[0.0, 0.0, 1.234, 0.8], [4.0, 2.5, 30.0, 0.001]], rtol=1e-6)
    assert depth[0, 0, 0] == 0.0 and depth[0, 1, 0] == 0.0  # 0 and the 65535 sentinel
    train_ids, test_ids = check_split(ds, n_test=2)
    assert test_ids == ids[-2:] and train_ids == ids[:-2]  # the last contiguous block, not random frames


def make_seven_official(scene: Path, split_files: bool = True) -> None:
    for seq, count in (("seq-01", 4), ("seq-02", 3), ("seq-03", 2)):
        for n in range(count):
            save_7scenes_frame(scene / seq, n, "png", n)
    if split_files:
        (scene / "TrainSplit.txt").write_text("sequence1\nsequence3\n")
        (scene / "TestSplit.txt").write_text("sequence2\n")


def test_seven_scenes_official_layout(tmp_path):
    make_seven_official(tmp_path / "redkitchen")
    for root in (tmp_path, tmp_path / "redkitchen"):
        ds = SevenScenes(root)
        assert len(ds) == 9
        assert ds.samples[0].id == "redkitchen/seq-01/frame-000000"
        assert [s.id for s in ds.split("test")] == [f"redkitchen/seq-02/frame-{n:06d}" for n in range(3)]
        train = [s.id for s in ds.split("train")]
        assert len(train) == 6 and all(("seq-01" in i) or ("seq-03" in i) for i in train)
        _, depth = check_pair(ds, ds.samples[0], (2, 4))
        assert depth[0, 2, 0] == pytest.approx(1.234) and depth[0, 1, 0] == 0.0


def test_seven_scenes_without_split_files_cuts_each_sequence(tmp_path):
    make_seven_official(tmp_path / "chess", split_files=False)
    ds = SevenScenes(tmp_path)
    test = [s.id for s in ds.split("test")]
    # last 20% (at least one frame) of every sequence, as one contiguous block each
    assert test == ["chess/seq-01/frame-000003", "chess/seq-02/frame-000002", "chess/seq-03/frame-000001"]
    check_split(ds, n_test=3)


def test_seven_scenes_real_redkitchen():
    if not (REAL_7SCENES / "frame-000000.depth.png").is_file():
        pytest.skip(f"real 7-Scenes frames not found at {REAL_7SCENES} (shared data folder absent in this checkout)")
    ds = SevenScenes(REAL_7SCENES)
    ids = [s.id for s in ds.samples]
    assert len(ids) == 500 and ids[0] == "frame-000000" and ids[-1] == "frame-000998"
    train, test = ds.split("train"), ds.split("test")
    assert [s.id for s in test] == ids[400:] and [s.id for s in train] == ids[:400]
    numbers = [int(s.id.split("-")[1]) for s in test]
    assert numbers == list(range(800, 1000, 2))  # one contiguous block at the end of the sequence
    valid = []
    for sample in ds.samples[::50]:
        image, depth = check_pair(ds, sample, (480, 640))
        v = depth[depth > 0]
        assert 0.5 * depth.size < v.size  # most pixels measured
        valid.append(v)
    valid = np.concatenate(valid)
    assert 0.5 <= valid.min() and valid.max() <= 4.5
    assert 1.0 < float(np.median(valid)) < 3.0


# -- download ----------------------------------------------------------------------------------------
class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def http_server(tmp_path, monkeypatch):
    """``(folder, base_url)`` of a local HTTP server on 127.0.0.1."""
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    served = tmp_path / "served"
    served.mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(served)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield served, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def zip_folder(folder: Path, archive: Path, prefix: str = "") -> None:
    with zipfile.ZipFile(archive, "w") as zf:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                zf.write(p, prefix + p.relative_to(folder).as_posix())


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def leftovers(root: Path) -> list[str]:
    return [p.name for p in root.rglob("*") if p.name.startswith(".download-") or p.suffix == ".part"]


def test_download_zip_with_checksum(http_server, tmp_path):
    served, base = http_server
    make_kitti(tmp_path / "src")
    archive = served / "data_depth_selection.zip"
    zip_folder(tmp_path / "src", archive)
    root = tmp_path / "kitti"
    ds = download("kitti", root, url=f"{base}/data_depth_selection.zip", sha256=sha256_of(archive).upper(), progress=False)
    assert isinstance(ds, KITTI) and len(ds) == 5
    assert (root / "depth_selection" / "val_selection_cropped" / "image").is_dir()
    assert leftovers(root) == [] and not (root / "data_depth_selection.zip").exists()
    _, depth = ds.load(ds.samples[0])
    assert depth[0, 1, 0] == 1.0 and depth[0, 0, 0] == 0.0


@pytest.mark.parametrize("name", ["val.tar.gz", "val.tgz"])
def test_download_tar_gz_prints_unknown_checksum(http_server, tmp_path, capsys, name):
    served, base = http_server
    make_diode(tmp_path / "src")
    archive = served / name
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(tmp_path / "src" / "val", arcname="val")
    ds = download(DIODE, tmp_path / "diode", url=f"{base}/{name}", progress=True)
    assert isinstance(ds, DIODE) and [s.id for s in ds.samples] == ["val/scene_00022/scan_00193/00022_00193_outdoor_000_010"]
    captured = capsys.readouterr()
    assert sha256_of(archive) in captured.out  # printed so that it can be pinned
    assert name in captured.err  # progress line
    assert leftovers(tmp_path / "diode") == []


def test_download_checksum_mismatch(http_server, tmp_path):
    served, base = http_server
    make_kitti(tmp_path / "src")
    archive = served / "data_depth_selection.zip"
    zip_folder(tmp_path / "src", archive)
    root = tmp_path / "kitti"
    with pytest.raises(DownloadError, match="sha256 mismatch") as err:
        download(KITTI, root, url=f"{base}/data_depth_selection.zip", sha256="0" * 64, progress=False)
    assert sha256_of(archive) in str(err.value) and "0" * 64 in str(err.value)
    assert not (root / "depth_selection").exists() and leftovers(root) == []


def traversal_zip(path: Path, member: str) -> None:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("ok/readme.txt", "fine")
        zf.writestr(member, "escaped")


def traversal_tar(path: Path, member: str, symlink: bool = False) -> None:
    with tarfile.open(path, "w:gz") as tf:
        data = b"escaped"
        info = tarfile.TarInfo("ok/readme.txt")
        info.size = 4
        tf.addfile(info, io.BytesIO(b"fine"))
        info = tarfile.TarInfo(member)
        if symlink:
            info.type, info.linkname = tarfile.SYMTYPE, "../../../outside"
            tf.addfile(info)
        else:
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))


@pytest.mark.parametrize("kind,member", [
    ("zip", "../evil.txt"), ("zip", "ok/../../evil.txt"), ("zip", "/abs/evil.txt"),
    ("tar", "../evil.txt"), ("tar", "/abs/evil.txt"), ("tar-symlink", "ok/link"),
])
def test_download_rejects_path_traversal(http_server, tmp_path, kind, member):
    served, base = http_server
    name = "bad.zip" if kind == "zip" else "bad.tar.gz"
    if kind == "zip":
        traversal_zip(served / name, member)
    else:
        traversal_tar(served / name, member, symlink=kind == "tar-symlink")
    root = tmp_path / "deep" / "root"
    with pytest.raises(DownloadError, match="Refusing to extract") as err:
        download(KITTI, root, url=f"{base}/{name}", progress=False)
    assert member in str(err.value)
    assert not (root / "ok").exists()  # nothing extracted, not even the safe member
    assert not list(tmp_path.rglob("evil.txt")) and leftovers(root) == []


def test_download_http_404_says_what_to_do(http_server, tmp_path):
    _, base = http_server
    with pytest.raises(DownloadError) as err:
        download("kitti", tmp_path / "kitti", url=f"{base}/missing.zip", progress=False)
    message = str(err.value)
    assert "HTTP 404" in message and f"{base}/missing.zip" in message
    assert "by hand" in message and KITTI.layout in message
    assert leftovers(tmp_path / "kitti") == []


def test_download_unreachable_host(tmp_path, monkeypatch):
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DownloadError, match="Could not reach") as err:
        download("kitti", tmp_path / "kitti", url=f"http://127.0.0.1:{port}/x.zip", progress=False, timeout=5)
    assert "network" in str(err.value) and KITTI.layout in str(err.value)


def test_download_without_public_url(tmp_path):
    assert Cityscapes.download_url is None
    with pytest.raises(DatasetNotFoundError) as err:
        download("cityscapes", tmp_path / "cs")
    message = str(err.value)
    assert "no public download URL" in message and "cityscapes-dataset.com" in message
    assert Cityscapes.layout in message and str(tmp_path / "cs") in message
    with pytest.raises(ValueError, match="Unknown dataset 'nope'.*kitti"):
        download("nope", tmp_path)


def test_download_plain_files_and_several_urls(http_server, tmp_path):
    served, base = http_server
    make_nyu_mat(served)
    urls = [f"{base}/nyu_depth_v2_labeled.mat", f"{base}/splits.mat"]
    hashes = {"nyu_depth_v2_labeled.mat": sha256_of(served / "nyu_depth_v2_labeled.mat"),
              "splits.mat": sha256_of(served / "splits.mat")}
    ds = download("nyu_depth_v2", tmp_path / "nyu", url=urls, sha256=hashes, progress=False)
    assert isinstance(ds, NYUDepthV2) and len(ds) == NYU_N
    assert [s.id for s in ds.split("test")] == ["0003", "0005"]
    with pytest.raises(DownloadError, match="sha256 mismatch"):
        download("nyu_depth_v2", tmp_path / "nyu2", url=urls, sha256=[None, "f" * 64], progress=False)


def test_download_seven_scenes_nested_sequence_zips(http_server, tmp_path):
    served, base = http_server
    src = tmp_path / "src"
    make_seven_official(src / "redkitchen")
    staged = tmp_path / "staged" / "redkitchen"
    staged.mkdir(parents=True)
    for seq in ("seq-01", "seq-02", "seq-03"):  # as shipped: one zip per sequence inside the scene zip
        zip_folder(src / "redkitchen" / seq, staged / f"{seq}.zip", prefix=f"{seq}/")
    for f in ("TrainSplit.txt", "TestSplit.txt"):
        (staged / f).write_bytes((src / "redkitchen" / f).read_bytes())
    zip_folder(tmp_path / "staged", served / "redkitchen.zip")
    ds = download(SevenScenes, tmp_path / "7s", url=f"{base}/redkitchen.zip", progress=False)
    assert len(ds) == 9 and [s.id for s in ds.split("test")][0] == "redkitchen/seq-02/frame-000000"
    assert not list((tmp_path / "7s").rglob("*.zip"))


def test_no_reader_is_registered_twice():
    names = [c.name for c in ALL_READERS]
    assert len(set(names)) == len(names)
    assert all(re.fullmatch(r"[a-z0-9_]+", n) for n in names)
