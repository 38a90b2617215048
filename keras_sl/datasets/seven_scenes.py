"""Microsoft 7-Scenes (Shotton et al., 2013): indoor Kinect RGB-D sequences."""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

from keras_sl.datasets.base import Sample
from keras_sl.datasets.depth import DepthDataset

_FRAME = re.compile(r"^(frame-\d+)\.depth\.png$")


def read_sequence_list(path: Path) -> list[str]:
    """``TrainSplit.txt``/``TestSplit.txt`` lines ``sequence1`` -> ``["seq-01"]``."""
    names = []
    for line in path.read_text(encoding="utf-8").splitlines():
        m = re.search(r"sequence\s*(\d+)", line, re.IGNORECASE)
        if m:
            names.append(f"seq-{int(m.group(1)):02d}")
    return names


class SevenScenes(DepthDataset):
    """Reader for 7-Scenes: official layout or one flat sequence folder.

    * official: ``<scene>/seq-XX/frame-NNNNNN.color.png`` +
      ``frame-NNNNNN.depth.png`` (+ ``.pose.txt``), with ``<scene>/TrainSplit.txt``
      and ``<scene>/TestSplit.txt`` listing ``sequenceN`` lines; ``root`` is a
      scene folder or a folder of scene folders. Ids ``<scene>/seq-XX/frame-NNNNNN``.
    * flat (one sequence, e.g. keras_sl's shared ``7scenes-redkitchen``):
      ``frame-NNNNNN.color.{jpg,png}`` + ``frame-NNNNNN.depth.png``. Ids ``frame-NNNNNN``.

    Depth PNGs are uint16 millimetres; 0 and 65535 mean "no measurement" (0 m).
    Consecutive frames are near-duplicates, so splits are never random
    frames: the official sequence lists when present, otherwise every
    sequence is cut into two contiguous blocks — its last ``test_fraction``
    (20%) of frames is the test set. The depth camera is not registered to the
    colour camera (edges are offset by some pixels).
    """

    name = "7scenes"
    official_split = True
    test_fraction = 0.2
    depth_scale = 1.0 / 1000.0
    invalid_values = (0, 65535)
    license = "7-Scenes: non-commercial research use (Microsoft Research dataset license)."
    homepage = "https://www.microsoft.com/en-us/research/project/rgb-d-dataset-7-scenes/"
    download_url = "http://download.microsoft.com/download/2/8/5/28564B23-0828-408F-8631-23B1EFF1DAC8/redkitchen.zip"
    # The scene archive holds one zip per sequence: download() extracts these too.
    download_nested = "*/seq-*.zip"
    layout = (
        "  <root>/<scene>/seq-XX/frame-NNNNNN.color.png and frame-NNNNNN.depth.png (uint16 mm),\n"
        "  <root>/<scene>/TrainSplit.txt and TestSplit.txt ('sequenceN' lines)\n"
        "  or one sequence: <root>/frame-NNNNNN.color.jpg and <root>/frame-NNNNNN.depth.png"
    )

    @staticmethod
    def _frames(folder: Path, prefix: str, extra: dict) -> list[Sample]:
        out = []
        for depth in sorted(folder.glob("frame-*.depth.png")):
            m = _FRAME.match(depth.name)
            if not m:
                continue
            for ext in (".png", ".jpg"):
                color = folder / f"{m.group(1)}.color{ext}"
                if color.is_file():
                    out.append(Sample(prefix + m.group(1), color, (depth,), dict(extra)))
                    break
        return out

    def _scene_dirs(self) -> list[Path]:
        if any(p.is_dir() for p in self.root.glob("seq-*")):
            return [self.root]
        return sorted(d for d in self.root.iterdir() if d.is_dir() and any(p.is_dir() for p in d.glob("seq-*")))

    def find_samples(self):
        out = []
        for scene in self._scene_dirs():
            for seq in sorted(p for p in scene.glob("seq-*") if p.is_dir()):
                extra = {"scene": scene.name, "sequence": seq.name, "scene_dir": scene}
                out += self._frames(seq, f"{scene.name}/{seq.name}/", extra)
        if out:
            return out
        return self._frames(self.root, "", {"scene": "", "sequence": "", "scene_dir": self.root})

    def official_splits(self):
        groups: dict[tuple[str, str], list[Sample]] = defaultdict(list)
        for s in self.samples:  # sorted by id = frame order within a sequence
            groups[(s.extra["scene"], s.extra["sequence"])].append(s)
        train, test = [], []
        for (_, seq), frames in groups.items():
            scene_dir = frames[0].extra["scene_dir"]
            train_list, test_list = scene_dir / "TrainSplit.txt", scene_dir / "TestSplit.txt"
            if seq and train_list.is_file() and test_list.is_file():
                if seq in read_sequence_list(train_list):
                    train += frames
                elif seq in read_sequence_list(test_list):
                    test += frames
                continue  # a sequence in neither list is left out
            head, tail = self.contiguous_split(frames, self.test_fraction)
            train += head
            test += tail
        return {"train": sorted(train, key=lambda s: s.id), "test": sorted(test, key=lambda s: s.id)}
