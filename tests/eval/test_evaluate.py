"""`toonlab evaluate` and `toonlab report` on real photos: landmark preservation is
near 0 for an identity translation and grows with a warped output; FID/KID are
reported unavailable without the Inception weights and computed with them; the HTML
report renders in a real headless Chromium with every image loaded."""

import json
import shutil
import subprocess
from pathlib import Path
from typing import Annotated

import numpy as np
import pytest
import torch
from pydantic import Field

from conftest import register_family, write_packed
from toonlab.schema import Section
from toonlab.train import checkpoint as ckpt

PX = 128


def _aligned_faces() -> tuple[np.ndarray, np.ndarray]:
    """Aligned 128 px crops and five points of the real photos shipped in packages."""
    from skimage import data as skdata

    from toonlab.data.decode import decode_file
    from toonlab.data.demo import package_file
    from toonlab.data.params import DecodeParams
    from toonlab.faces.align import align_face
    from toonlab.faces.detectors import MediapipeFaces

    images = [skdata.astronaut()]
    for rel in ("data/images/Tom_Hanks_54745.png", "data/images/t1.jpg"):
        res = decode_file(package_file("insightface", rel), DecodeParams(min_side=1))
        images.append(res.image)
    backend = MediapipeFaces()
    crops, fives = [], []
    try:
        for img in images:
            for face in backend.detect(img):
                al = align_face(img, None, face.five, face.landmarks, "photo")
                crops.append(al.rgba128[:, :, :3])
                fives.append(al.five256 / 2.0)
    finally:
        backend.close()
    return np.stack(crops), np.stack(fives).astype(np.float32)


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    root = tmp_path_factory.mktemp("packed")
    rgb, five = _aligned_faces()
    assert len(rgb) >= 6   # astronaut, Tom Hanks, six faces of the group photo
    for domain in ("photo", "anime"):
        write_packed(root, domain, rgb, five)
    return root


class Shift(torch.nn.Module):
    """A stand-in 'translation': moves the image content by `dx` pixels."""

    def __init__(self, dx: int):
        super().__init__()
        self.dx = dx

    def forward(self, x):
        if self.dx == 0:
            return x.clone()
        return torch.roll(x, shifts=(self.dx, self.dx), dims=(2, 3))


class StandInParams(Section):
    dx: Annotated[int, Field(ge=0)] = 0


@pytest.fixture
def standin(monkeypatch):
    """A registered family whose 'model' is a pixel shift (identity for dx 0)."""
    from toonlab.runs.inference import Inference

    def inference(p, nets):
        return Inference("standin", "photo", "photo", PX, Shift(p.dx), backward=Shift(-p.dx))

    register_family(monkeypatch, "standin", StandInParams, inference)

    def make_run(root: Path, name: str, dx: int) -> None:
        ckpt.save(root / "models" / name / "checkpoints" / "step-00000001.pt",
                  {"family": "standin", "step": 1, "config": {"params": {"dx": dx}}, "nets": {}})
    return make_run


def _params(tmp_path: Path, packed: Path, **evaluate):
    from toonlab.params import validate_params

    return validate_params({
        "train": {"out_dir": str(tmp_path / "models")},
        "pack": {"out_dir": str(packed)},
        "evaluate": {"metrics_dir": str(tmp_path / "metrics"), "out_dir": str(tmp_path / "reports/eval"),
                     "runs": ["ident", "shifted"], "kid_subset_px": 4, "kid_subsets": 5, **evaluate},
        "curate": {"report_dir": str(tmp_path / "reports/curation")},
        "report": {"out": str(tmp_path / "reports/index.html")},
        "ablations": {"variants": {}},
    })


def test_landmark_preservation_identity_vs_warp(tmp_path, packed, standin, monkeypatch):
    from toonlab.eval.evaluate import evaluate_run

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "no-torch-home"))
    standin(tmp_path, "ident", 0)
    standin(tmp_path, "shifted", 12)
    params = _params(tmp_path, packed)
    ident = evaluate_run("ident", params, torch.device("cpu"))
    # runtime.cpu_precision reaches the run's networks (the shift is exact in bf16 too).
    in_bf16 = params.model_copy(update={"runtime": params.runtime.model_copy(update={"cpu_precision": "bf16"})})
    shifted = evaluate_run("shifted", in_bf16, torch.device("cpu"))
    assert (ident["precision"], shifted["precision"]) == ("fp32", "bf16")
    assert "TOONLAB_CPU_BF16=0" in ident["precision_reason"]

    on_disk = json.loads((tmp_path / "metrics/ident.json").read_text())
    assert on_disk == json.loads(json.dumps(ident))
    assert ident["n_images"] == shifted["n_images"] >= 6
    assert ident["detection_rate"] > 0.8
    # The same faces re-detected on an unchanged image: only detector noise.
    assert ident["landmark_nme"] < 0.06, ident
    assert shifted["landmark_nme"] > ident["landmark_nme"] + 0.1, (ident, shifted)
    # Identity both ways: perfect reconstruction; the shift and its inverse roll back exactly too.
    assert ident["cycle_psnr"] is None or ident["cycle_psnr"] > 60
    assert ident["cycle_ssim"] == pytest.approx(1.0)
    # No Inception weights here: FID/KID unavailable with the reason, never a number.
    assert "fid" not in ident and "kid_x100" not in ident
    assert "pt_inception-2015-12-05-6726825d.pth" in ident["unavailable"]["fid"]
    assert "identity" in ident["unavailable"]
    assert ident["backends"]["landmarks"].startswith("mediapipe")
    assert "torch" in ident["versions"]
    fixed = sorted(p.name for p in (tmp_path / "reports/eval/ident").iterdir())
    assert "input-000.png" in fixed and "output-000.png" in fixed and "reconstruction-000.png" in fixed


@pytest.mark.slow  # FID/KID with Inception on CPU: not in `make test-fast`
def test_fid_kid_with_weights_file(tmp_path, packed, standin, monkeypatch):
    """With a weights file in the standard place, FID/KID are numbers: 0 for a run that
    reproduces the target set exactly, larger for a shifted one."""
    from toonlab.eval.evaluate import evaluate_run
    from toonlab.eval.inception import FID_WEIGHTS_FILE, FIDInception

    torch.manual_seed(0)
    net = FIDInception()
    for m in net.modules():   # a random network that keeps the activation scale (default init vanishes)
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(m.weight)
    hub = tmp_path / "torch" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    torch.save(net.state_dict(), hub / FID_WEIGHTS_FILE)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    standin(tmp_path, "ident", 0)
    standin(tmp_path, "shifted", 24)
    small = tmp_path / "packed"    # three faces: Inception on CPU is slow
    for f in packed.rglob("*.npy"):
        (small / f.parent.name).mkdir(parents=True, exist_ok=True)
        np.save(small / f.parent.name / f.name, np.load(f)[:3])
    params = _params(tmp_path, small)
    ident = evaluate_run("ident", params, torch.device("cpu"))
    shifted = evaluate_run("shifted", params, torch.device("cpu"))
    assert "fid" not in ident["unavailable"]
    assert abs(ident["fid"]) < 1e-3
    assert shifted["fid"] > ident["fid"] + 1e-3
    assert np.isfinite(shifted["kid_x100"])


def test_evaluate_errors_are_clear(tmp_path, packed, standin):
    from toonlab.errors import UsageError
    from toonlab.eval.evaluate import evaluate_run

    params = _params(tmp_path, packed)
    with pytest.raises(UsageError, match="no run 'missing': not a checkpoint file, a run folder, or a run under"):
        evaluate_run("missing", params, torch.device("cpu"))
    (tmp_path / "models" / "untrained").mkdir(parents=True)
    with pytest.raises(UsageError, match="no checkpoint in .*untrained/checkpoints"):
        evaluate_run("untrained", params, torch.device("cpu"))


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    raise AssertionError("headless Chromium is required for this test: `apt-get install chromium` "
                         "(make test installs it)")


@pytest.mark.slow  # a headless browser: not in `make test-fast`
def test_report_renders_in_headless_chromium(tmp_path, packed, standin, monkeypatch):
    from PIL import Image

    from toonlab.eval.evaluate import evaluate_run
    from toonlab.eval.report import build_report

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "no-torch-home"))
    standin(tmp_path, "ident", 0)
    standin(tmp_path, "shifted", 12)
    params = _params(tmp_path, packed)
    for run in ("ident", "shifted"):
        evaluate_run(run, params, torch.device("cpu"))
    # A run's training record: DVCLive loss curves and a sample grid.
    curves = tmp_path / "models/ident/dvclive/plots/metrics/train"
    curves.mkdir(parents=True)
    (curves / "G_total.tsv").write_text("step\tG_total\n" + "".join(f"{i}\t{5 - i * 0.1}\n" for i in range(20)))
    (tmp_path / "models/ident/summary.json").write_text("{}")
    (tmp_path / "models/ident/samples").mkdir()
    Image.fromarray(np.full((32, 96, 3), 200, np.uint8)).save(tmp_path / "models/ident/samples/latest.png")
    cur = tmp_path / "reports/curation"
    cur.mkdir(parents=True)
    (cur / "summary.json").write_text(json.dumps({"domains": {"photo": {
        "raw_files": 10, "ingest": {"ok": 9, "rejected": 1}, "faces": {"kept": 8, "rejected": 2},
        "split": {"train": {"faces": 6}, "val": {"faces": 1}, "test": {"faces": 1}}}}}))
    (cur / "index.html").write_text("<html><body>curation</body></html>")

    page = build_report(params)
    text = page.read_text()
    assert "http://" not in text and "https://" not in text   # nothing fetched from outside
    assert text.count("<img") >= 2 * 6 + 1
    assert "landmark NME" in text and "&#9733;" in text        # best value marked
    assert "pt_inception-2015-12-05-6726825d.pth" in text     # why FID is unavailable

    # A real browser: every <img> decoded (naturalWidth > 0), then a non-blank screenshot.
    probe = tmp_path / "reports" / "probe.html"
    probe.write_text(text.replace("</body>", "<script>window.addEventListener('load', () => {"
                                  "const bad = [...document.images].filter(i => !i.complete || i.naturalWidth === 0);"
                                  "document.title = 'images:' + document.images.length + ':broken:' + bad.length;"
                                  "});</script></body>"))
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--no-first-run", "--virtual-time-budget=5000"]
    chromium = _chromium()
    dom = subprocess.run([chromium, *flags, "--dump-dom", probe.as_uri()], capture_output=True, text=True,
                         timeout=120)
    title = dom.stdout.split("<title>")[1].split("</title>")[0]
    n_images = text.count("<img")
    assert title == f"images:{n_images}:broken:0", title
    shot = tmp_path / "shot.png"
    subprocess.run([chromium, *flags, f"--screenshot={shot}", "--window-size=1200,1600", page.as_uri()],
                   capture_output=True, timeout=120)
    img = np.asarray(Image.open(shot).convert("RGB")).astype(np.float32)
    assert img.std() > 10   # not a blank page
