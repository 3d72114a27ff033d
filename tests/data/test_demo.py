"""The embedded demo crawl: real package photos plus generated images, deterministic."""

import json
from pathlib import Path

import pytest
from PIL import Image

from toonlab.cli import main
from toonlab.data.demo import MANIFEST, write_demo_crawl
from toonlab.data.params import DemoParams
from toonlab.errors import UsageError
from toonlab.util.fileio import sha256_file

SMALL = DemoParams(seed=3, variants_per_photo=2, anime_count=3, anime_px=128, photo_max_px=256)


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes(tmp_path):
    write_demo_crawl(tmp_path / "a", SMALL)
    write_demo_crawl(tmp_path / "b", SMALL)
    a, b = tree(tmp_path / "a"), tree(tmp_path / "b")
    assert a == b and len(a) > 10


def test_different_seed_differs(tmp_path):
    write_demo_crawl(tmp_path / "a", SMALL)
    write_demo_crawl(tmp_path / "b", SMALL.model_copy(update={"seed": 4}))
    a, b = tree(tmp_path / "a"), tree(tmp_path / "b")
    anime_a = {v for k, v in a.items() if k.startswith("anime/portrait_")}
    anime_b = {v for k, v in b.items() if k.startswith("anime/portrait_")}
    assert len(anime_a) == SMALL.anime_count and not anime_a & anime_b


def test_layout_manifest_and_provenance(tmp_path):
    out = tmp_path / "raw"
    counts = write_demo_crawl(out, SMALL)
    manifest = json.loads((out / MANIFEST).read_text())
    files = manifest["files"]
    # Real photos from installed packages: skimage's astronaut and insightface's images.
    sources = {f["source"] for f in files if f["path"].startswith("photo/") and "defect" not in f}
    assert "skimage:data/astronaut.png" in sources
    assert any(s.startswith("insightface:data/images/") for s in sources)
    assert counts["photo"] == len(sources) * SMALL.variants_per_photo
    assert counts["anime"] == SMALL.anime_count
    for f in files:
        p = out / f["path"]
        assert p.is_file() and sha256_file(p) == f["sha256"]
    # Every file on disk is listed (besides the manifest and marker).
    listed = {f["path"] for f in files}
    on_disk = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()} - {MANIFEST, ".toonlab-demo"}
    assert on_disk == listed
    # The photo domain has real pixel data of the right size.
    with Image.open(out / "photo" / "astronaut_00.jpg") as im:
        assert im.size == (256, 256) and im.mode == "RGB"


def test_messy_crawl_contents(tmp_path):
    out = tmp_path / "raw"
    write_demo_crawl(out, SMALL)
    files = json.loads((out / MANIFEST).read_text())["files"]
    defects = {f["defect"]: f for f in files if "defect" in f}
    assert set(defects) == {"exact_duplicate", "near_duplicate", "truncated", "html_not_image", "no_face"}
    dup = defects["exact_duplicate"]
    assert (out / dup["path"]).read_bytes() == (out / dup["source"]).read_bytes()
    trunc = defects["truncated"]
    assert (out / trunc["source"]).read_bytes().startswith((out / trunc["path"]).read_bytes())
    with pytest.raises(OSError):
        with Image.open(out / trunc["path"]) as im:
            im.load()
    clean = tmp_path / "clean"
    write_demo_crawl(clean, SMALL.model_copy(update={"messy": False}))
    assert not any("defect" in f for f in json.loads((clean / MANIFEST).read_text())["files"])


def test_refuses_to_overwrite_foreign_folder(tmp_path):
    out = tmp_path / "mycrawl"
    (out / "photo").mkdir(parents=True)
    (out / "photo" / "precious.jpg").write_bytes(b"user data")
    with pytest.raises(UsageError, match="not written by demo-data"):
        write_demo_crawl(out, SMALL)
    assert (out / "photo" / "precious.jpg").read_bytes() == b"user data"


def test_rerun_replaces_previous_demo_atomically(tmp_path):
    out = tmp_path / "raw"
    write_demo_crawl(out, SMALL.model_copy(update={"anime_count": 5}))
    write_demo_crawl(out, SMALL)
    assert len(list((out / "anime").glob("portrait_*"))) == SMALL.anime_count
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp leftovers


def test_cli_refuses_demo_over_own_crawl(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text("data:\n  source: folder\n")
    assert main(["demo-data"]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    assert not (tmp_path / "data").exists()
