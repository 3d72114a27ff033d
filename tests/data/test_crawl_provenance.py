"""Provenance to the source, end to end: real face photos crawled from a loopback HTTP
server with a CSV list carrying a `license` column -> ingest -> detect -> matte -> align
-> curate -> pack -> export-dataset; every kept face names its URL, license and fetch time
in the curated manifest, pack's index.json, the report's per-license counts and the
exported dataset's manifest."""

import csv
import hashlib
import io
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from skimage import data as skdata

from conftest import file_server
from toonlab.cli import main
from toonlab.data.demo import package_file
from toonlab.util.tables import read_rows

ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def crawled(tmp_path_factory):
    from toonlab.data.anime_draw import draw_portrait

    astronaut = _png(Image.fromarray(skdata.astronaut()))
    hanks = Path(package_file("insightface", "data/images/Tom_Hanks_54745.png")).read_bytes()
    anime = [_png(draw_portrait(np.random.default_rng([0, 2, n]), 384)) for n in range(2)]
    files = {"/astronaut.png": astronaut, "/hanks.png": hanks, "/mirror/hanks.png": hanks,
             "/anime0.png": anime[0], "/anime1.png": anime[1]}

    with file_server(files, "image/png") as (base, _):
        root = tmp_path_factory.mktemp("provenance")
        (root / "data/urls").mkdir(parents=True)
        (root / "data/urls/faces.csv").write_text(
            "url,domain,license\n"
            f"{base}/astronaut.png,photo,Public-Domain\n"
            f"{base}/mirror/hanks.png,photo,CC-BY-SA-4.0\n"  # the same bytes as hanks.png: later by URL order
            f"{base}/hanks.png,photo,CC-BY-2.0\n"
            f"{base}/anime0.png,anime,CC0\n"
            f"{base}/anime1.png,anime,\n"                     # no license given
            f"{base}/missing.png,photo,CC0\n")
        # A hand-added anime portrait, not from the crawl: no provenance, license unknown.
        (root / "data/raw/anime").mkdir(parents=True)
        draw_portrait(np.random.default_rng([0, 2, 5]), 384).save(root / "data/raw/anime/own.png")
        params = {"runtime": {"workers": 2}, "data": {"source": "crawl"},
                  "crawl": {"allow_private": True, "timeout_s": 5.0, "retries": 0, "per_host_rate": 50.0},
                  "preprocess": {"multi_face": "keep_all", "max_bg_fraction": 1.0},
                  "curate": {"split": {"train": 0.5, "val": 0.25, "test": 0.25}}}
        (root / "params.yaml").write_text(yaml.safe_dump(params))
        cwd = Path.cwd()
        os.chdir(root)
        try:
            for stage in ("crawl", "ingest", "detect", "matte", "align", "curate", "pack"):
                assert main([stage]) == 0, stage
        finally:
            os.chdir(cwd)
    sha = {name: hashlib.sha256(body).hexdigest() for name, body in
           (("astronaut", astronaut), ("hanks", hanks), ("anime0", anime[0]), ("anime1", anime[1]))}
    return root, base, sha


def _by_sha(rows):
    return {r["sha256"]: r for r in rows}


def test_crawl_log_and_ingest_manifest_carry_provenance(crawled):
    root, base, sha = crawled
    log = {r["url"]: r for r in map(json.loads, (root / "data/raw/crawl_log.jsonl").read_text().splitlines())}
    assert all(ISO_UTC.match(log[f"{base}/{n}.png"]["fetched_at"]) for n in ("astronaut", "hanks", "anime0"))
    assert log[f"{base}/missing.png"]["status"] == "failed"
    photo = _by_sha(read_rows(root / "data/interim/photo/manifest.parquet"))
    assert (photo[sha["hanks"]]["source_url"], photo[sha["hanks"]]["license"], photo[sha["hanks"]]["source_urls"]) \
        == (f"{base}/hanks.png", "CC-BY-2.0", 2)
    assert photo[sha["hanks"]]["fetched_at"] == log[f"{base}/hanks.png"]["fetched_at"]
    anime = {r["path"]: r for r in read_rows(root / "data/interim/anime/manifest.parquet")}
    assert anime["own.png"]["source_url"] is None and anime["own.png"]["source_urls"] == 0


def test_curated_manifest_pack_index_and_report(crawled):
    root, base, sha = crawled
    want = {sha["astronaut"]: (f"{base}/astronaut.png", "Public-Domain"),
            sha["hanks"]: (f"{base}/hanks.png", "CC-BY-2.0"),
            sha["anime0"]: (f"{base}/anime0.png", "CC0"), sha["anime1"]: (f"{base}/anime1.png", None)}
    kept: dict[str, list] = {}
    for domain in ("photo", "anime"):
        curated = read_rows(root / f"data/curated/{domain}.parquet")
        kept[domain] = curated
        index = json.loads((root / f"data/packed/{domain}/index.json").read_text())
        packed = [r for s in index["splits"].values() for r in s["rows"]]
        assert sorted((r["sha256"], r["face_index"]) for r in packed) == sorted(
            (r["sha256"], r["face_index"]) for r in curated)
        for r in [*curated, *packed]:
            if r["raw_path"] == "own.png":
                assert (r["source_url"], r["license"], r["fetched_at"]) == (None, None, None)
                continue
            assert (r["source_url"], r["license"]) == want[r["sha256"]]
            assert ISO_UTC.match(r["fetched_at"])
            assert (root / "data/raw" / domain / r["raw_path"]).is_file()
    photo_shas = {r["sha256"] for r in kept["photo"]}
    assert {sha["astronaut"], sha["hanks"]} <= photo_shas
    assert len({r["raw_path"] for r in kept["anime"]}) == 3

    summary = json.loads((root / "reports/curation/summary.json").read_text())
    assert summary["domains"]["photo"]["licenses"] == {"CC-BY-2.0": 1, "Public-Domain": 1}
    anime_lic = summary["domains"]["anime"]["licenses"]
    assert anime_lic["CC0"] == sum(r["sha256"] == sha["anime0"] for r in kept["anime"])
    assert anime_lic["unknown"] == sum(r["license"] is None for r in kept["anime"]) >= 2
    html = (root / "reports/curation/index.html").read_text()
    assert "Kept faces per license" in html and "Public-Domain" in html


def test_export_dataset_manifest_and_licenses(crawled, tmp_path, capsys):
    root, base, sha = crawled
    out = tmp_path / "export"
    out.mkdir()
    (out / "old.txt").write_text("x")
    one_split = read_rows(root / "data/curated/anime.parquet")[0]["split"]
    cwd = Path.cwd()
    os.chdir(root)
    try:
        assert main(["export-dataset", "--out", str(out), "--domain", "photo"]) == 2  # not empty
        assert "--force" in capsys.readouterr().err
        assert (out / "old.txt").is_file()
        assert main(["export-dataset", "--out", str(out), "--force"]) == 0
        assert main(["export-dataset", "--out", str(tmp_path / "one_split"), "--split", one_split,
                     "--domain", "anime", "--px", "128"]) == 0
    finally:
        os.chdir(cwd)
    assert not (out / "old.txt").exists()
    lines = (out / "manifest.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    with open(out / "manifest.csv", newline="") as fh:
        csv_rows = list(csv.DictReader(fh))
    assert [r["file"] for r in csv_rows] == [r["file"] for r in rows]
    curated = {(d, r["sha256"], r["face_index"]): r for d in ("photo", "anime")
               for r in read_rows(root / f"data/curated/{d}.parquet")}
    assert len(rows) == len(curated)
    for r in rows:
        c = curated[(r["domain"], r["sha256"], r["face_index"])]
        assert r["file"] == f"{r['domain']}/{c['split']}/{r['sha256']}_{r['face_index']}.png"
        assert (r["split"], r["raw_path"], r["source_url"], r["license"], r["fetched_at"]) == (
            c["split"], c["raw_path"], c["source_url"], c["license"], c["fetched_at"])
        assert (out / r["file"]).read_bytes() == (root / "data/processed" / r["domain"] / c["crop_256"]).read_bytes()
    hanks = next(r for r in csv_rows if r["sha256"] == sha["hanks"])
    assert (hanks["source_url"], hanks["license"]) == (f"{base}/hanks.png", "CC-BY-2.0")
    assert ISO_UTC.match(hanks["fetched_at"])
    own = next(r for r in csv_rows if r["raw_path"] == "own.png")
    assert (own["source_url"], own["license"], own["fetched_at"]) == ("", "", "")
    licenses = (out / "LICENSES.md").read_text()
    assert "| CC-BY-2.0 | 1 | 1 | 1 |" in licenses and "| Public-Domain | 1 | 1 | 1 |" in licenses
    assert "| unknown |" in licenses

    small = [json.loads(line) for line in (tmp_path / "one_split/manifest.jsonl").read_text().splitlines()]
    assert small and all(r["domain"] == "anime" and r["split"] == one_split for r in small)
    assert Image.open(tmp_path / "one_split" / small[0]["file"]).size == (128, 128)
    shutil.rmtree(tmp_path / "one_split")
