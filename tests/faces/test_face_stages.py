"""The face pipeline end to end on real photos shipped inside installed packages and on
generated anime portraits: ingest -> detect -> matte -> align -> curate -> pack."""

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from PIL import Image
from skimage import data as skdata

from toonlab.cli import main
from toonlab.data.demo import package_file
from toonlab.faces.align import TEMPLATES
from toonlab.faces.detectors import MediapipeFaces
from toonlab.faces.pack import load_split
from toonlab.faces.params import DetectParams
from toonlab.util.tables import read_rows


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    root = tmp_path_factory.mktemp("faces")
    raw = root / "data/raw"
    (raw / "photo").mkdir(parents=True)
    (raw / "anime").mkdir(parents=True)
    Image.fromarray(skdata.astronaut()).save(raw / "photo/astronaut.png")
    shutil.copy(package_file("insightface", "data/images/Tom_Hanks_54745.png"), raw / "photo/tom_hanks.png")
    shutil.copy(package_file("insightface", "data/images/t1.jpg"), raw / "photo/group.jpg")
    Image.fromarray(skdata.coffee()).save(raw / "photo/coffee.png")  # no face
    from toonlab.data.anime_draw import draw_portrait

    for n in range(3):
        draw_portrait(np.random.default_rng([0, 2, n]), 384).save(raw / f"anime/p{n}.png")
    params = {"runtime": {"workers": 2}, "preprocess": {"multi_face": "keep_all", "max_bg_fraction": 1.0},
              "curate": {"split": {"train": 0.5, "val": 0.25, "test": 0.25}}}
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    cwd = Path.cwd()
    import os

    os.chdir(root)
    try:
        for stage in ("ingest", "detect", "matte", "align", "curate", "pack"):
            assert main([stage]) == 0, stage
    finally:
        os.chdir(cwd)
    return root


def rows(root, domain):
    return read_rows(root / "data/processed" / domain / "manifest.parquet")


def by_file(rs):
    out = {}
    for r in rs:
        out.setdefault(r["raw_path"], []).append(r)
    return out


def test_face_counts_on_real_photos(pipeline):
    files = by_file(rows(pipeline, "photo"))
    assert len(files["astronaut.png"]) == 1 and files["astronaut.png"][0]["status"] == "ok"
    assert len(files["tom_hanks.png"]) == 1 and files["tom_hanks.png"][0]["face_index"] == 0
    assert len(files["group.jpg"]) == 6  # the six people of the group photo
    assert [r["reason"] for r in files["coffee.png"]] == ["no_face"]


def test_aligned_eyes_land_on_template(pipeline):
    """Eyes re-detected on the aligned 256 px crop lie within 2 px of the template."""
    detector = MediapipeFaces(DetectParams())
    for r in rows(pipeline, "photo"):
        if r["raw_path"] != "astronaut.png":
            continue
        five = np.asarray(r["five_256"]).reshape(5, 2)
        assert np.abs(five[:2] - TEMPLATES["photo"][:2]).max() < 2.0
        rgba = np.asarray(Image.open(pipeline / "data/processed/photo" / r["crop_256"]))
        faces = detector.detect(np.ascontiguousarray(rgba[..., :3]))
        assert len(faces) == 1
        assert np.abs(faces[0].five[:2] - TEMPLATES["photo"][:2]).max() < 2.0


def test_mask_covers_face_not_corners(pipeline):
    for domain in ("photo", "anime"):
        for r in rows(pipeline, domain):
            if r["status"] != "ok" or (domain == "photo" and r["raw_path"] != "astronaut.png"):
                continue
            alpha = np.asarray(Image.open(pipeline / "data/processed" / domain / r["crop_256"]))[..., 3] / 255.0
            t = TEMPLATES[domain]  # the face between the eyes and the mouth
            eyes_to_mouth = alpha[int(t[0, 1]):int(t[3, 1]), int(t[0, 0]):int(t[1, 0])]
            assert eyes_to_mouth.mean() > 0.9, (domain, r["raw_path"])
            for corner in (alpha[:24, :24], alpha[:24, -24:]):
                assert corner.mean() < 0.2, (domain, r["raw_path"])


def test_anime_faces_detected_and_aligned_with_parts(pipeline):
    rs = rows(pipeline, "anime")
    assert len(rs) == 3 and all(r["status"] == "ok" for r in rs)
    for r in rs:
        names = r["landmark_names"].split(";")
        for part in ("eye_left", "eye_right", "nose", "mouth", "chin"):
            assert part in names
        five = np.asarray(r["five_256"]).reshape(5, 2)
        assert np.abs(five[:2] - TEMPLATES["anime"][:2]).max() < 2.0
        assert r["matte_backend"] == "floodfill"


def test_crops_and_manifest_link_back_to_raw(pipeline):
    import hashlib

    for r in rows(pipeline, "photo"):
        raw = (pipeline / "data/raw/photo" / r["raw_path"]).read_bytes()
        assert hashlib.sha256(raw).hexdigest() == r["sha256"]
        assert r["detect_backend"] == "mediapipe" and r["detect_version"].startswith("0.10.21")
        if r["status"] == "ok":
            big = np.asarray(Image.open(pipeline / "data/processed/photo" / r["crop_256"]))
            small = np.asarray(Image.open(pipeline / "data/processed/photo" / r["crop_128"]))
            assert big.shape == (256, 256, 4) and small.shape == (128, 128, 4)
            assert np.array_equal(small, cv2.resize(big, (128, 128), interpolation=cv2.INTER_AREA))


def test_report_split_and_pack(pipeline):
    html = (pipeline / "reports/curation/index.html").read_text()
    assert "no_face" in html and "floodfill" in html
    total = 0
    for split in ("train", "val", "test"):
        arrays = load_split(pipeline / "data/packed", "photo", split, 256)
        assert arrays["rgb"].shape[1:] == (256, 256, 3)
        total += len(arrays["rgb"])
    assert total == sum(r["status"] == "ok" for r in rows(pipeline, "photo"))


def test_rerun_processes_only_new_images(pipeline, caplog):
    import logging
    import os

    from toonlab.data.anime_draw import draw_portrait

    draw_portrait(np.random.default_rng([0, 2, 7]), 384).save(pipeline / "data/raw/anime/new.png")
    cwd = Path.cwd()
    os.chdir(pipeline)
    try:
        with caplog.at_level(logging.INFO, logger="toonlab"):
            assert main(["ingest", "--domain", "anime"]) == 0
            assert main(["detect", "--domain", "anime"]) == 0
    finally:
        os.chdir(cwd)
    assert "4 images, 1 processed now" in caplog.text
