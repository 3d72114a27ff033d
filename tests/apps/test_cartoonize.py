"""`toonlab cartoonize` on real photos shipped in installed packages, with a stand-in
family whose 'translation' is colour inversion: all / largest faces of a group photo,
paste-back that leaves every pixel outside the face masks byte-identical, and batches
in which bad files are reported and skipped."""

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from conftest import register_family
from toonlab.cli import main
from toonlab.data.demo import package_file
from toonlab.runs.inference import Inference
from toonlab.schema import Section
from toonlab.train import checkpoint as ckpt

PX = 64


class Invert(torch.nn.Module):
    def forward(self, x):
        return -x


class StandInParams(Section):
    px: int = PX


def _inference(p=None, nets=None) -> Inference:
    return Inference("invert", "photo", "anime", PX, Invert())


@pytest.fixture
def run_dir(tmp_path, monkeypatch) -> Path:
    """A registered stand-in family and a run of it with one checkpoint."""
    register_family(monkeypatch, "invert", StandInParams, _inference)
    run = tmp_path / "models" / "invert"
    ckpt.save(run / "checkpoints" / "step-00000001.pt",
              {"family": "invert", "step": 1, "config": {"params": {"px": PX}}, "nets": {}})
    (tmp_path / "params.yaml").write_text(f"train:\n  out_dir: {tmp_path / 'models'}\n")
    monkeypatch.setenv("TOONLAB_PROGRESS", "0")
    return run


def _photo(rel: str) -> Path:
    p = package_file("insightface", rel)
    assert p is not None, f"insightface's {rel} is required"
    return p


def _astronaut() -> Path:
    p = package_file("skimage", "data/astronaut.png")
    assert p is not None
    return p


def _cli(tmp_path: Path, *args: str) -> int:
    return main(["cartoonize", "--params", str(tmp_path / "params.yaml"), *args])


def test_group_photo_all_and_largest_faces(tmp_path, run_dir):
    t1 = _photo("data/images/t1.jpg")
    assert _cli(tmp_path, "--run", "invert", str(t1), "--out", str(tmp_path / "all")) == 0
    crops = sorted(p.name for p in (tmp_path / "all").glob("t1_face*.png"))
    assert crops == [f"t1_face{k}.png" for k in range(6)]
    summary = json.loads((tmp_path / "all" / "summary.json").read_text())
    assert summary["succeeded"] == 1 and summary["faces"] == 6 and summary["failed"] == 0
    img = np.asarray(Image.open(tmp_path / "all" / "t1_face0.png"))
    assert img.shape == (PX, PX, 3)

    # A checkpoint file works as --run too; largest only.
    checkpoint = run_dir / "checkpoints" / "step-00000001.pt"
    assert _cli(tmp_path, "--run", str(checkpoint), "--faces", "largest", str(t1),
                "--out", str(tmp_path / "largest")) == 0
    assert sorted(p.name for p in (tmp_path / "largest").glob("*.png")) == ["t1_face0.png"]
    # The largest face's crop is the inverse of its aligned input.
    from toonlab.apps.cartoonize import Cartoonizer

    car = Cartoonizer(_inference())
    rgb = np.asarray(Image.open(t1).convert("RGB"))
    faces = car.detect(rgb)
    crop, _ = car.align(rgb, faces[0])
    out = np.asarray(Image.open(tmp_path / "largest" / "t1_face0.png")).astype(int)
    assert np.abs(out - (255 - crop.astype(int))).max() <= 1
    car.close()


def test_paste_back_changes_only_the_faces(tmp_path):
    from toonlab.apps.cartoonize import Cartoonizer
    from toonlab.apps.params import CartoonizeParams

    car = Cartoonizer(_inference(), CartoonizeParams(paste_back=True))
    try:
        for path, n in ((_astronaut(), 1), (_photo("data/images/t1.jpg"), 6)):
            rgb = np.asarray(Image.open(path).convert("RGB"))
            res = car.process(rgb)
            assert len(res.cartoons) == n
            pasted, mask = res.pasted, res.mask
            assert pasted.shape == rgb.shape and pasted.dtype == np.uint8
            outside = ~(mask > 0)
            assert outside.mean() > 0.3
            assert np.array_equal(pasted[outside], rgb[outside])
            # The union mask lies inside the warped crop squares (drawn independently here).
            squares = np.zeros(rgb.shape[:2], np.uint8)
            for m in res.matrices:
                inv = cv2.invertAffineTransform(m)
                corners = np.array([[0, 0], [256, 0], [256, 256], [0, 256]], np.float64) @ inv[:, :2].T + inv[:, 2]
                cv2.fillConvexPoly(squares, np.rint(corners).astype(np.int32), 1)
                assert np.all(mask >= car.face_mask(rgb.shape, m) - 1e-6)
            squares = cv2.dilate(squares, np.ones((5, 5), np.uint8))
            assert np.all(mask[squares == 0] == 0)
            assert np.array_equal(pasted[squares == 0], rgb[squares == 0])
            # Inside the fully blended part, the photo is inverted (up to resampling).
            core = mask > 0.999
            assert core.sum() > 500
            diff = np.abs(pasted[core].astype(int) - (255 - rgb[core].astype(int)))
            assert np.median(diff) < 12, np.median(diff)
            assert np.mean(pasted[mask > 0] != rgb[mask > 0]) > 0.5
    finally:
        car.close()


def test_paste_back_cli_writes_one_image_per_photo(tmp_path, run_dir):
    t1 = _photo("data/images/t1.jpg")
    assert _cli(tmp_path, "--run", str(run_dir), "--paste-back", str(t1), str(_astronaut()),
                "--out", str(tmp_path / "out")) == 0
    names = sorted(p.name for p in (tmp_path / "out").glob("*.png"))
    assert names == ["astronaut_cartoon.png", "t1_cartoon.png"]
    src = np.asarray(Image.open(t1).convert("RGB"))
    out = np.asarray(Image.open(tmp_path / "out" / "t1_cartoon.png"))
    assert out.shape == src.shape
    # Corners are far from every face: untouched bytes.
    assert np.array_equal(out[:40, :40], src[:40, :40])
    assert not np.array_equal(out, src)


def test_batch_continues_past_bad_files(tmp_path, run_dir, caplog):
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    good = _astronaut().read_bytes()
    (folder / "sub" / "astronaut.png").write_bytes(good)
    (folder / "broken.jpg").write_bytes(_photo("data/images/t1.jpg").read_bytes()[:300])
    (folder / "noface.jpg").write_bytes(_photo("data/images/mask_blue.jpg").read_bytes())
    (folder / "notes.txt").write_text("not an image, not scanned")
    out = tmp_path / "out"
    assert _cli(tmp_path, "--run", "invert", str(folder), str(tmp_path / "nothing*.png"), "--out", str(out)) == 0
    summary = json.loads((out / "summary.json").read_text())
    by_name = {Path(e["path"]).name: e for e in summary["files"]}
    assert set(by_name) == {"astronaut.png", "broken.jpg", "noface.jpg", "nothing*.png"}
    assert by_name["astronaut.png"]["status"] == "ok" and by_name["astronaut.png"]["faces"] == 1
    assert by_name["noface.jpg"]["reason"] == "no_face"
    assert by_name["broken.jpg"]["status"] == "failed"
    assert by_name["broken.jpg"]["reason"] == "truncated"
    assert by_name["nothing*.png"]["reason"] == "missing"
    assert summary["succeeded"] == 1 and summary["failed"] == 3
    assert summary["reasons"]["no_face"] == 1
    assert (out / "astronaut_face0.png").is_file()
    assert "no_face" in caplog.text


def test_all_inputs_failing_exit_1(tmp_path, run_dir, capsys):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 50)
    noface = _photo("data/images/mask_blue.jpg")
    assert _cli(tmp_path, "--run", "invert", str(bad), str(noface), "--out", str(tmp_path / "out")) == 1
    err = capsys.readouterr().err
    assert "all 2 inputs failed" in err and "no_face 1" in err and "summary.json" in err
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["succeeded"] == 0


def test_usage_errors_are_clear(tmp_path, run_dir, capsys):
    t1 = str(_photo("data/images/t1.jpg"))
    assert _cli(tmp_path, t1, "--out", str(tmp_path / "o")) == 2            # no --run
    assert "--run" in capsys.readouterr().err
    assert _cli(tmp_path, "--run", "nosuchrun", t1, "--out", str(tmp_path / "o")) == 2
    assert "no run 'nosuchrun'" in capsys.readouterr().err
    assert _cli(tmp_path, "--run", "invert", str(tmp_path / "empty"), "--out", str(tmp_path / "o")) == 1
    assert "all 1 inputs failed (missing 1)" in capsys.readouterr().err

    from toonlab.apps.cartoonize import Cartoonizer
    from toonlab.errors import UsageError

    with pytest.raises(UsageError, match="unconditional model"):
        Cartoonizer(Inference("dcgan", None, "anime", 64, None, generate=torch.nn.Identity(), nz=8))


def test_matte_limits_the_blend(tmp_path):
    from toonlab.apps.cartoonize import Cartoonizer
    from toonlab.apps.params import CartoonizeParams

    rgb = np.asarray(Image.open(_astronaut()).convert("RGB"))
    car = Cartoonizer(_inference(), CartoonizeParams(paste_back=True, matte=True))
    plain = Cartoonizer(_inference(), CartoonizeParams(paste_back=True))
    try:
        res = car.process(rgb)
        ref = plain.process(rgb)
    finally:
        car.close()
        plain.close()
    assert res.alpha is not None and res.alpha.shape == rgb.shape[:2]
    assert np.all(res.mask <= ref.mask + 1e-6)
    assert np.all(res.mask <= np.clip(res.alpha, 0, 1) + 1e-6)
    outside = ~(res.mask > 0)
    assert np.array_equal(res.pasted[outside], rgb[outside])


def test_invalid_utf8_name_keeps_the_summary(tmp_path, run_dir):
    folder = tmp_path / "in"
    folder.mkdir()
    with open(os.fsencode(folder) + b"/bad\xff\xfe.png", "wb") as fh:  # a good photo, a non-UTF-8 name
        fh.write(_astronaut().read_bytes())
    with open(os.fsencode(folder) + b"/cut\xff.png", "wb") as fh:  # a broken one: its detail names it
        fh.write(_astronaut().read_bytes()[:400])
    out = tmp_path / "out"
    assert _cli(tmp_path, "--run", "invert", str(folder), "--out", str(out)) == 0
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    by_name = {Path(e["path"]).name: e for e in summary["files"]}
    assert set(by_name) == {"bad\\xff\\xfe.png", "cut\\xff.png"}
    ok = by_name["bad\\xff\\xfe.png"]
    assert ok["status"] == "ok" and ok["outputs"] == ["bad___face0.png"]
    assert (out / "bad___face0.png").is_file()
    assert by_name["cut\\xff.png"]["reason"] == "truncated"
    from toonlab.data.decode import path_from_text

    assert os.fsencode(path_from_text(ok["path"])) == os.fsencode(folder) + b"/bad\xff\xfe.png"


@pytest.mark.parametrize("where", ["file", "under_file"])
def test_unusable_out_path_is_a_usage_error_before_any_work(tmp_path, run_dir, capsys, monkeypatch, where):
    blocker = tmp_path / "taken"
    blocker.write_text("a file, not a folder")
    out = blocker if where == "file" else blocker / "sub" / "out"
    from toonlab.apps import cartoonize

    def no_work(*a, **k):
        raise AssertionError("an input was processed")

    monkeypatch.setattr(cartoonize.Cartoonizer, "run_file", no_work)
    monkeypatch.setattr(cartoonize, "load_inference", no_work)
    assert _cli(tmp_path, "--run", "invert", str(_astronaut()), "--out", str(out)) == 2
    err = capsys.readouterr().err
    assert str(out) in err and "internal error" not in err
    assert blocker.read_text() == "a file, not a folder"


def test_empty_folder_beside_other_inputs_is_named_in_a_warning(tmp_path, run_dir, caplog):
    empty = tmp_path / "empty_folder"
    (empty / "sub").mkdir(parents=True)
    (empty / "notes.txt").write_text("no images here")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 50)
    assert _cli(tmp_path, "--run", "invert", str(empty), str(bad), "--out", str(tmp_path / "out")) == 1
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any(str(empty) in m and "skipped" in m for m in warnings), warnings
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["inputs"] == 1
