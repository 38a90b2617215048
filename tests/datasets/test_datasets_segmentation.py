"""Segmentation dataset readers on tiny fixtures in each dataset's real on-disk layout."""

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from keras_sl.datasets.base import DatasetNotFoundError
from keras_sl.datasets.bccd import BCCD
from keras_sl.datasets.chase_db1 import CHASEDB1
from keras_sl.datasets.fives import FIVES
from keras_sl.datasets.fnc import FluorescentNeuronalCells
from keras_sl.datasets.glas import GlaS
from keras_sl.datasets.isic2018 import ISIC2018
from keras_sl.datasets.monusac import MoNuSAC
from keras_sl.datasets.monuseg import MoNuSeg
from keras_sl.datasets.nuinsseg import NuInsSeg
from keras_sl.datasets.sartorius import Sartorius
from keras_sl.datasets.splits import deterministic_split
from keras_sl.datasets.tnbc import TNBC

H, W = 20, 24  # every fixture image is 24 pixels wide, 20 high


# -- fixture writers -------------------------------------------------------------------
def _rgb(seed, h=H, w=W, channels=3):
    return np.random.default_rng(seed).integers(0, 256, (h, w, channels), dtype=np.uint8)


def write_image(path: Path, seed: int, channels: int = 3, h: int = H, w: int = W) -> np.ndarray:
    """Random RGB(A) image; returns its RGB pixels."""
    path.parent.mkdir(parents=True, exist_ok=True)
    a = _rgb(seed, h, w, channels)
    Image.fromarray(a).save(path)
    return a[..., :3]


def write_grey(path: Path, seed: int) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    a = _rgb(seed, channels=1)[..., 0]
    Image.fromarray(a).save(path)
    return np.repeat(a[..., None], 3, axis=-1)


def box(top, left, bottom, right, h=H, w=W):
    """Bool mask, rows top..bottom and columns left..right inclusive."""
    m = np.zeros((h, w), dtype=bool)
    m[top : bottom + 1, left : right + 1] = True
    return m


def triangle(x0, y0, n, h=H, w=W):
    """Right triangle (x0, y0), (x0 + n, y0), (x0, y0 + n), boundary included."""
    y, x = np.mgrid[:h, :w]
    return (x >= x0) & (y >= y0) & ((x - x0) + (y - y0) <= n)


def write_mask(path: Path, mask: np.ndarray, mode: str = "L", noisy: bool = False, seed: int = 0):
    """Save a bool mask as 0/255 grey (``noisy``: values jittered like JPEG /
    interpolation artefacts, 0..40 and 215..255), 0/1, 1-bit or RGB."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "01":
        a = mask.astype(np.uint8)
    else:
        a = np.where(mask, 255, 0).astype(np.uint8)
        if noisy:
            jitter = np.random.default_rng(seed).integers(0, 41, mask.shape).astype(np.uint8)
            a = np.where(mask, a - jitter, a + jitter).astype(np.uint8)
    if mode == "RGB":
        Image.fromarray(np.repeat(a[..., None], 3, axis=-1)).save(path)
    elif mode == "1":
        Image.fromarray(a).convert("1").save(path)
    else:
        Image.fromarray(a).save(path)


def write_labels(path: Path, regions, dtype=np.uint8, labels=None):
    """Instance label image: region k gets label ``labels[k]`` (default k + 1)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    a = np.zeros((H, W), dtype=dtype)
    for k, region in enumerate(regions):
        a[region] = labels[k] if labels else k + 1
    Image.fromarray(a).save(path)


def aperio_xml(path: Path, annotations):
    """Aperio ImageScope XML; ``annotations`` = [(class name, [polygon, ...])]."""
    path.parent.mkdir(parents=True, exist_ok=True)
    parts = ['<?xml version="1.0"?>\n<Annotations MicronsPerPixel="0.252100">']
    region_id = 0
    for k, (name, polygons) in enumerate(annotations, start=1):
        parts.append(f'<Annotation Id="{k}" Name="" ReadOnly="0" LineColor="65280" Visible="1" Selected="0">')
        parts.append(f'<Attributes><Attribute Name="{name}" Id="0" Value=""/></Attributes>')
        parts.append('<Regions><RegionAttributeHeaders><AttributeHeader Id="9999" Name="Region"/>')
        parts.append("</RegionAttributeHeaders>")
        for polygon in polygons:
            region_id += 1
            parts.append(f'<Region Id="{region_id}" Type="0" Zoom="1" Selected="0" NegativeROA="0">')
            parts.append("<Attributes/><Vertices>")
            parts += [f'<Vertex X="{x:.3f}" Y="{y:.3f}" Z="0"/>' for x, y in polygon]
            parts.append("</Vertices></Region>")
        parts.append("</Regions><Plots/></Annotation>")
    parts.append("</Annotations>")
    path.write_text("\n".join(parts))


def rect(x0, y0, x1, y1):
    return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]


def tri(x0, y0, n):
    return [(x0, y0), (x0 + n, y0), (x0, y0 + n)]


# -- one builder per dataset: writes the fixture, returns what the reader must find ------
# Keys: cls, root, images {id: RGB pixels or None (lossy)}, masks {id: bool mask},
# official ({"train": [...], "test": [...]} or None), n_test (deterministic split),
# break_ (removes the target files so that no sample is left).


def build_chase(tmp):
    root = tmp / "chase"
    images, masks = {}, {}
    for k, i in enumerate(["Image_01L", "Image_01R", "Image_02L", "Image_02R"]):
        write_image(root / f"{i}.jpg", k)
        images[i] = None  # JPEG: lossy
        masks[i] = box(2 + k, 3, 9, 12 + k)
        write_mask(root / f"{i}_1stHO.png", masks[i], mode="1")
        write_mask(root / f"{i}_2ndHO.png", ~masks[i], mode="1")  # second observer: ignored
    (root / "readme.txt").write_text("CHASE_DB1")

    def break_():
        for p in root.glob("*_1stHO.png"):
            p.unlink()

    return dict(cls=CHASEDB1, root=root, images=images, masks=masks, official=None, n_test=1, break_=break_)


def build_fives(tmp):
    root = tmp / "fives"
    base = root / "FIVES A Fundus Image Dataset for AI-based Vessel Segmentation"
    images, masks, official = {}, {}, {"train": [], "test": []}
    names = [("train", "1_A"), ("train", "2_N"), ("train", "3_G"), ("test", "1_D"), ("test", "2_A")]
    for k, (part, name) in enumerate(names):
        i = f"{part}_{name}"
        images[i] = write_image(base / part / "Original" / f"{name}.png", 10 + k)
        masks[i] = box(1, 1 + k, 15, 5 + 2 * k)
        write_mask(base / part / "Ground truth" / f"{name}.png", masks[i], mode="RGB")
        official[part].append(i)

    def break_():
        for part in ("train", "test"):
            shutil.rmtree(base / part / "Ground truth")

    return dict(cls=FIVES, root=root, images=images, masks=masks, official=official, n_test=None, break_=break_)


def build_isic(tmp):
    root = tmp / "isic"
    images, masks, official = {}, {}, {"train": [], "test": []}
    parts = {
        "train": ("ISIC2018_Task1-2_Training_Input", "ISIC2018_Task1_Training_GroundTruth"),
        "test": ("ISIC2018_Task1-2_Test_Input", "ISIC2018_Task1_Test_GroundTruth"),
    }
    ids = [("train", "ISIC_0000000"), ("train", "ISIC_0000001"), ("train", "ISIC_0000003"),
           ("test", "ISIC_0012236"), ("test", "ISIC_0012255")]
    for k, (part, i) in enumerate(ids):
        write_image(root / parts[part][0] / f"{i}.jpg", 20 + k)
        images[i] = None
        masks[i] = box(4, 2 + k, 16 - k, 20)
        write_mask(root / parts[part][1] / f"{i}_segmentation.png", masks[i])
        official[part].append(i)
    for folder in (parts["train"][0], parts["train"][1]):
        (root / folder / "LICENSE.txt").write_text("CC-BY-NC")
        (root / folder / "ATTRIBUTION.txt").write_text("ISIC")
    # Validation images are not part of the paper's protocol.
    write_image(root / "ISIC2018_Task1-2_Validation_Input" / "ISIC_0012576.jpg", 29)
    write_mask(root / "ISIC2018_Task1_Validation_GroundTruth" / "ISIC_0012576_segmentation.png", box(0, 0, 5, 5))

    def break_():
        for _, gt in parts.values():
            shutil.rmtree(root / gt)

    return dict(cls=ISIC2018, root=root, images=images, masks=masks, official=official, n_test=None, break_=break_)


def build_glas(tmp):
    root = tmp / "glas"
    base = root / "Warwick QU Dataset (Released 2016_07_08)"
    images, masks, official = {}, {}, {"train": [], "test": []}
    for k, i in enumerate(["train_1", "train_2", "testA_1", "testB_1"]):
        images[i] = write_image(base / f"{i}.bmp", 30 + k)
        glands = [box(1, 1, 6, 8 + k), box(10, 4 + k, 18, 20)]
        # Dark labels 1, 2 (3 for train_2): a grey-level threshold would miss them.
        write_labels(base / f"{i}_anno.bmp", glands, labels=[1, 3 if i == "train_2" else 2])
        masks[i] = glands[0] | glands[1]
        official["train" if i.startswith("train") else "test"].append(i)
    (base / "Grade.csv").write_text("name,patient ID,grade (GlaS),grade (Sirinukunwattana et al. 2015)\n")

    def break_():
        for p in base.glob("*_anno.bmp"):
            p.unlink()

    return dict(cls=GlaS, root=root, images=images, masks=masks, official=official, n_test=None, break_=break_)


def build_bccd(tmp):
    root = tmp / "bccd"
    base = root / "BCCD Dataset with mask"
    images, masks, official = {}, {}, {"train": [], "test": []}
    names = [("train", "0a747cb3-c720-4572-a661-ab5670a5c42e"), ("train", "1b2ad3ab-8ab6-4b8e-9f28-9b2ae2d9d7d8"),
             ("train", "2c0f5f7d-3a2b-4b6a-8f1e-5a3c2d1e0f9a"), ("test", "3d4e5f6a-7b8c-4d9e-8f0a-1b2c3d4e5f6a"),
             ("test", "4e5f6a7b-8c9d-4e0f-9a1b-2c3d4e5f6a7b")]
    for k, (part, name) in enumerate(names):
        i = f"{part}_{name}"
        images[i] = write_image(base / part / "original" / f"{name}.png", 40 + k)
        masks[i] = box(3, 3, 12 + k, 10) | box(15, 15, 18, 22)
        mode = "01" if k == 1 else "L"  # one mask stored as 0/1, the others 0/255 with noise
        write_mask(base / part / "mask" / f"{name}.png", masks[i], mode=mode, noisy=mode == "L", seed=k)
        official[part].append(i)

    def break_():
        for part in ("train", "test"):
            shutil.rmtree(base / part / "mask")

    return dict(cls=BCCD, root=root, images=images, masks=masks, official=official, n_test=None, break_=break_)


def build_fnc(tmp):
    root = tmp / "fnc"
    images, masks = {}, {}
    for k, i in enumerate(["Mar19bS1C2R1_DMR_200x_g", "Mar19bS1C2R3_VLPAGr_200x_g", "Mar21bS2C1R1_LHr_200x_g"]):
        images[i] = write_image(root / "all_images" / "images" / f"{i}.png", 50 + k)
        masks[i] = box(5, 5 + k, 9, 9 + 3 * k)
        write_mask(root / "all_masks" / "masks" / f"{i}.png", masks[i], noisy=True, seed=k)

    def break_():
        shutil.rmtree(root / "all_masks")

    return dict(cls=FluorescentNeuronalCells, root=root, images=images, masks=masks, official=None, n_test=1,
                break_=break_)


def build_monusac(tmp):
    root = tmp / "monusac"
    train = root / "MoNuSAC_images_and_annotations"
    test = root / "MoNuSAC Testing Data and Annotations"
    images, masks, official = {}, {}, {"train": [], "test": []}
    cases = [
        ("train", train, "TCGA-55-1594-01Z-00-DX1", "TCGA-55-1594-01Z-00-DX1_003",
         [("Epithelial", [rect(2, 3, 7, 8)]), ("Lymphocyte", [tri(12, 2, 8), rect(20, 15, 23, 19)])],
         box(3, 2, 8, 7) | triangle(12, 2, 8) | box(15, 20, 19, 23)),
        ("train", train, "TCGA-55-1594-01Z-00-DX1", "TCGA-55-1594-01Z-00-DX1_004",
         [("Macrophage", [rect(0, 0, 4, 4)]), ("Neutrophil", [])], box(0, 0, 4, 4)),
        ("train", train, "TCGA-A2-A0CV-01Z-00-DX1", "TCGA-A2-A0CV-01Z-00-DX1_1",
         # A one-point region fills its pixel; a 2-vertex region is skipped.
         [("Epithelial", [rect(10, 10, 10, 10), [(1, 1), (5, 1)]])], box(10, 10, 10, 10)),
        ("test", test, "TCGA-2Z-A9JG-01Z-00-DX1", "TCGA-2Z-A9JG-01Z-00-DX1_1",
         [("Lymphocyte", [rect(1, 1, 6, 4)]), ("Ambiguous", [rect(10, 5, 20, 15)])], box(1, 1, 4, 6)),
    ]
    for k, (part, folder, patient, stem, annotations, mask) in enumerate(cases):
        i = f"{part}_{stem}"
        images[i] = write_image(folder / patient / f"{stem}.tif", 60 + k, channels=4)  # RGBA, as shipped
        (folder / patient / f"{stem}.svs").write_bytes(b"not read: the .tif exists")
        aperio_xml(folder / patient / f"{stem}.xml", annotations)
        masks[i] = mask
        official[part].append(i)

    def break_():
        for p in root.rglob("*.xml"):
            p.unlink()

    return dict(cls=MoNuSAC, root=root, images=images, masks=masks, official=official, n_test=None, break_=break_)


def build_monuseg(tmp):
    root = tmp / "monuseg"
    train = root / "MoNuSeg 2018 Training Data"
    test = root / "MoNuSegTestData"
    images, masks, official = {}, {}, {"train": [], "test": []}
    cases = [
        ("train", "TCGA-18-5592-01Z-00-DX1", [rect(0, 0, 5, 3), rect(8, 8, 11, 15)],
         box(0, 0, 3, 5) | box(8, 8, 15, 11)),
        ("train", "TCGA-21-5784-01Z-00-DX1", [tri(3, 4, 10)], triangle(3, 4, 10)),
        ("train", "TCGA-38-6178-01Z-00-DX1", [rect(2, 2, 9, 9), rect(5, 5, 14, 12)],
         box(2, 2, 9, 9) | box(5, 5, 12, 14)),
        ("test", "TCGA-2Z-A9J9-01A-01-TS1", [rect(15, 1, 22, 6)], box(1, 15, 6, 22)),
        ("test", "TCGA-44-2665-01B-06-BS6", [tri(0, 0, 6), rect(18, 12, 23, 19)],
         triangle(0, 0, 6) | box(12, 18, 19, 23)),
    ]
    for k, (part, i, polygons, mask) in enumerate(cases):
        image_dir, xml_dir = (train / "Tissue Images", train / "Annotations") if part == "train" else (test, test)
        images[i] = write_image(image_dir / f"{i}.tif", 70 + k)
        aperio_xml(xml_dir / f"{i}.xml", [("", polygons)])
        masks[i] = mask
        official[part].append(i)

    def break_():
        shutil.rmtree(train / "Annotations")
        for p in test.glob("*.xml"):
            p.unlink()

    return dict(cls=MoNuSeg, root=root, images=images, masks=masks, official=official, n_test=None, break_=break_)


def build_nuinsseg(tmp):
    root = tmp / "nuinsseg"
    images, masks = {}, {}
    cases = [("human bladder", "human_bladder_01"), ("human bladder", "human_bladder_02"),
             ("mouse liver", "mouse_liver_01"), ("mouse liver", "mouse_liver_02")]
    for k, (tissue, i) in enumerate(cases):
        images[i] = write_image(root / tissue / "tissue images" / f"{i}.png", 80 + k, channels=4)
        nuclei = [box(1, 1, 4, 4 + k), box(6, 10, 12, 14), box(15, 2, 18, 20)]
        # 16-bit instance labels, some above 255 and some dark: only "nonzero" is right.
        write_labels(root / tissue / "label masks modify" / f"{i}.tif", nuclei, dtype=np.uint16, labels=[1, 2, 300 + k])
        write_labels(root / tissue / "label masks" / f"{i}.tif", [box(0, 0, 19, 23)], dtype=np.uint16)  # superseded
        write_mask(root / tissue / "mask binary" / f"{i}.png", box(0, 0, 1, 1))  # not the target
        masks[i] = nuclei[0] | nuclei[1] | nuclei[2]

    def break_():
        for p in list(root.glob("*/label masks*")):
            shutil.rmtree(p)

    return dict(cls=NuInsSeg, root=root, images=images, masks=masks, official=None, n_test=1, break_=break_)


def build_sartorius(tmp):
    root = tmp / "sartorius"
    images, masks = {}, {}

    def flat(*runs):
        m = np.zeros(H * W, dtype=bool)
        for start, length in runs:  # 1-indexed starts over the row-major flattened image
            m[start - 1 : start - 1 + length] = True
        return m.reshape(H, W)

    cells = {
        "0030fd0e6378": [[(1, 5)], [(49, 3), (73, 3)], [(2, 2)]],  # overlapping cells merge
        "0140b3c8f445": [[(W * 10 + 5, 10), (W * 11 + 5, 10), (W * 12 + 5, 10)]],
        "01ae5a43a2ab": [[(W * H - 7, 8)], [(20, 10)]],  # a run across the end of row 0
    }
    rows = []
    for k, (i, instances) in enumerate(cells.items()):
        images[i] = write_grey(root / "train" / f"{i}.png", 90 + k)
        masks[i] = np.zeros((H, W), dtype=bool)
        for runs in instances:
            masks[i] |= flat(*runs)
            annotation = " ".join(f"{s} {n}" for s, n in runs)
            rows.append({"id": i, "annotation": annotation, "width": W, "height": H, "cell_type": "shsy5y",
                         "plate_time": "11h30m00s", "sample_date": "2019-06-16", "sample_id": "shsy5y[diff]_F10_4",
                         "elapsed_timedelta": "0 days 00:00:00"})
    with open(root / "train.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    write_grey(root / "test" / "7ae19de7bc2a.png", 99)  # competition test image: no annotation
    write_grey(root / "train_semi_supervised" / "0a6ecc5fe78a.png", 98)

    def break_():
        (root / "train.csv").unlink()

    return dict(cls=Sartorius, root=root, images=images, masks=masks, official=None, n_test=1, break_=break_)


def build_tnbc(tmp):
    root = tmp / "tnbc"
    base = root / "TNBC_NucleiSegmentation"
    images, masks = {}, {}
    for k, (slide, i) in enumerate([("01", "01_1"), ("01", "01_2"), ("02", "02_1"), ("11", "11_3")]):
        images[i] = write_image(base / f"Slide_{slide}" / f"{i}.png", 100 + k, channels=4)  # RGBA as shipped
        masks[i] = box(k, k, 10 + k, 12)
        write_mask(base / f"GT_{slide}" / f"{i}.png", masks[i])
    (root / "__MACOSX" / "TNBC_NucleiSegmentation" / "Slide_01").mkdir(parents=True)
    (root / "__MACOSX" / "TNBC_NucleiSegmentation" / "Slide_01" / "._01_1.png").write_bytes(b"\x00\x05")
    for folder in ("Slide_01", "GT_01"):  # macOS forks next to the files: not images
        (base / folder / "._01_2.png").write_bytes(b"\x00\x05")

    def break_():
        for p in base.glob("GT_*"):
            shutil.rmtree(p)

    return dict(cls=TNBC, root=root, images=images, masks=masks, official=None, n_test=1, break_=break_)


BUILDERS = {
    "chase_db1": build_chase,
    "fives": build_fives,
    "isic2018": build_isic,
    "glas": build_glas,
    "bccd": build_bccd,
    "fnc": build_fnc,
    "monusac": build_monusac,
    "monuseg": build_monuseg,
    "nuinsseg": build_nuinsseg,
    "sartorius": build_sartorius,
    "tnbc": build_tnbc,
}


@pytest.fixture(params=sorted(BUILDERS))
def fixture(request, tmp_path):
    spec = BUILDERS[request.param](tmp_path)
    assert spec["cls"].name == request.param
    return spec


# -- tests ---------------------------------------------------------------------------------
def test_finds_every_sample(fixture):
    ds = fixture["cls"](fixture["root"])
    assert len(ds) == len(fixture["masks"])
    assert [s.id for s in ds.samples] == sorted(fixture["masks"])


def test_load_gives_rgb_uint8_and_exact_binary_mask(fixture):
    ds = fixture["cls"](fixture["root"])
    for sample in ds.samples:
        image, mask = ds.load(sample)
        assert image.dtype == np.uint8 and image.shape == (H, W, 3), sample.id
        expected_pixels = fixture["images"][sample.id]
        if expected_pixels is not None:
            np.testing.assert_array_equal(image, expected_pixels)
        assert mask.dtype == np.float32 and mask.shape == (H, W, 1), sample.id
        assert set(np.unique(mask)) <= {0.0, 1.0}, sample.id
        expected = fixture["masks"][sample.id]
        assert int(mask.sum()) == int(expected.sum()) > 0, sample.id
        np.testing.assert_array_equal(mask[..., 0].astype(bool), expected, err_msg=sample.id)


def test_splits_are_disjoint_complete_and_deterministic(fixture):
    ds = fixture["cls"](fixture["root"])
    train, test = [s.id for s in ds.split("train")], [s.id for s in ds.split("test")]
    assert train and test
    assert not set(train) & set(test)
    assert sorted(train + test) == sorted(fixture["masks"])
    again = fixture["cls"](fixture["root"])
    assert [s.id for s in again.split("train")] == train and [s.id for s in again.split("test")] == test
    official = fixture["official"]
    if official is not None:
        assert fixture["cls"].official_split
        assert train == sorted(official["train"]) and test == sorted(official["test"])
    else:
        assert not fixture["cls"].official_split
        expected = deterministic_split(sorted(fixture["masks"]), fixture["n_test"], seed=2025)
        assert (train, test) == expected


def test_missing_files_raise_with_layout(fixture, tmp_path):
    cls = fixture["cls"]
    with pytest.raises(DatasetNotFoundError) as err:
        cls(tmp_path / "does-not-exist")
    assert cls.layout in str(err.value) and "does not exist" in str(err.value)
    fixture["break_"]()
    with pytest.raises(DatasetNotFoundError) as err:
        cls(fixture["root"])
    message = str(err.value)
    assert cls.layout in message and "no samples found" in message
    assert (cls.homepage in message) if cls.download_url is None else ("keras_sl.datasets.download" in message)


def test_layout_and_metadata_are_filled(fixture):
    cls = fixture["cls"]
    assert cls.task == "segmentation" and cls.homepage and cls.license and cls.layout.startswith("  <root>/")
    assert len(cls.split_sizes) == 2 and all(n > 0 for n in cls.split_sizes)
    urls = [cls.download_url] if isinstance(cls.download_url, str) else list(cls.download_url or ())
    assert all(u.startswith("https://") for u in urls)
    assert cls.download_sha256 is None or len(cls.download_sha256) == 64


@pytest.mark.parametrize(
    "cls, build, counts",
    [
        # TNBC: 50 tiles from 11 slides; paper 36 train / 14 test.
        (TNBC, "tnbc", [5, 4, 4, 4, 4, 5, 4, 5, 5, 5, 5]),
        # CHASE_DB1: 14 children x 2 eyes; paper 21 / 7.
        (CHASEDB1, "chase", [2] * 14),
    ],
)
def test_paper_split_sizes_when_the_count_matches(tmp_path, cls, build, counts):
    assert sum(counts) == sum(cls.split_sizes)
    tiny = np.zeros((4, 4), dtype=np.uint8)
    tiny[1:3, 1:3] = 255
    if build == "tnbc":
        base = tmp_path / "TNBC_NucleiSegmentation"
        for slide, n in enumerate(counts, start=1):
            for k in range(1, n + 1):
                write_image(base / f"Slide_{slide:02d}" / f"{slide:02d}_{k}.png", slide * 10 + k, h=4, w=4)
                write_mask(base / f"GT_{slide:02d}" / f"{slide:02d}_{k}.png", tiny > 0)
    else:
        for child in range(1, len(counts) + 1):
            for eye in "LR":
                write_image(tmp_path / f"Image_{child:02d}{eye}.jpg", child, h=4, w=4)
                write_mask(tmp_path / f"Image_{child:02d}{eye}_1stHO.png", tiny > 0, mode="1")
    ds = cls(tmp_path)
    train, test = ds.split("train"), ds.split("test")
    assert (len(train), len(test)) == cls.split_sizes
    ids = [s.id for s in ds.samples]
    assert ([s.id for s in train], [s.id for s in test]) == deterministic_split(ids, cls.split_sizes[1], seed=2025)


def test_isic_without_official_test_folders_splits_training_images(tmp_path):
    spec = build_isic(tmp_path)
    for folder in ("ISIC2018_Task1-2_Test_Input", "ISIC2018_Task1_Test_GroundTruth"):
        shutil.rmtree(spec["root"] / folder)
    ds = ISIC2018(spec["root"])
    ids = sorted(spec["official"]["train"])
    assert [s.id for s in ds.samples] == ids
    # Paper fraction 1000 / 3594 of 3 images -> 1 test image.
    train, test = [s.id for s in ds.split("train")], [s.id for s in ds.split("test")]
    assert (train, test) == deterministic_split(ids, 1, seed=2025)


@pytest.mark.parametrize("cls, build", [(MoNuSeg, build_monuseg), (MoNuSAC, build_monusac)])
def test_xml_datasets_without_test_folder_split_deterministically(tmp_path, cls, build):
    spec = build(tmp_path)
    shutil.rmtree(spec["root"] / ("MoNuSegTestData" if cls is MoNuSeg else "MoNuSAC Testing Data and Annotations"))
    ds = cls(spec["root"])
    ids = sorted(spec["official"]["train"])
    assert [s.id for s in ds.samples] == ids
    assert ([s.id for s in ds.split("train")], [s.id for s in ds.split("test")]) == deterministic_split(ids, 1)


def test_monusac_patient_folders_directly_under_root(tmp_path):
    spec = build_monusac(tmp_path)
    flat = tmp_path / "flat"
    shutil.copytree(spec["root"] / "MoNuSAC_images_and_annotations", flat)
    ds = MoNuSAC(flat)
    assert [s.id for s in ds.samples] == sorted(i.removeprefix("train_") for i in spec["official"]["train"])
    for sample in ds.samples:
        np.testing.assert_array_equal(ds.load(sample)[1][..., 0].astype(bool), spec["masks"][f"train_{sample.id}"])


def test_nested_and_flat_layouts_are_equivalent(tmp_path):
    """CHASE_DB1 in ``<root>/CHASEDB1/``, BCCD with ``<root>`` = the archive folder."""
    chase = build_chase(tmp_path / "a")
    nested = tmp_path / "chase_nested"
    shutil.copytree(chase["root"], nested / "CHASEDB1")
    assert [s.id for s in CHASEDB1(nested).samples] == sorted(chase["masks"])
    bccd = build_bccd(tmp_path / "b")
    inner = BCCD(bccd["root"] / "BCCD Dataset with mask")
    assert [s.id for s in inner.samples] == sorted(bccd["masks"])
    assert [s.id for s in inner.split("test")] == sorted(bccd["official"]["test"])


def test_nuinsseg_prefixes_ids_only_when_names_collide(tmp_path):
    root = tmp_path / "NuInsSeg"
    for k, tissue in enumerate(["human liver", "mouse liver"]):
        write_image(root / tissue / "tissue images" / "liver_01.png", k)
        write_labels(root / tissue / "label masks modify" / "liver_01.tif", [box(0, 0, 2, 2)], dtype=np.uint16)
    ds = NuInsSeg(tmp_path)  # tissue folders inside <root>/NuInsSeg/
    assert [s.id for s in ds.samples] == ["human_liver__liver_01", "mouse_liver__liver_01"]
