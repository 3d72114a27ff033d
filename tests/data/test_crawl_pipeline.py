"""`data.source: crawl` end to end: URL lists -> `dvc repro` (through Snakemake) ->
files named by content hash -> ingest manifest, against a real loopback HTTP server."""

import hashlib
import io
import json

import numpy as np
import pytest
import yaml
from PIL import Image

from conftest import file_server, run

pytestmark = pytest.mark.slow


def _jpeg(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    img = Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)).resize((128, 128), Image.BICUBIC)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


IMAGES = {"/a.jpg": _jpeg(1), "/b.jpg": _jpeg(2), "/anime.jpg": _jpeg(3)}


@pytest.fixture
def server():
    with file_server(IMAGES, "image/jpeg") as served:
        yield served


def test_crawl_source_through_dvc_and_snakemake(project, server):
    base, hits = server
    (project / "data/urls/list.csv").write_text(
        "url,domain,license\n"
        f"{base}/a.jpg,photo,CC-BY\n{base}/b.jpg,photo,CC0\n{base}/anime.jpg,anime,CC-BY\n"
        f"{base}/missing.jpg,photo,\nfile:///etc/passwd,photo,\n")
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["data"]["source"] = "crawl"
    params["crawl"].update(timeout_s=5.0, retries=0, per_host_rate=50.0, allow_private=True)  # a loopback server
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    run(["dvc", "repro", "ingest"], project)
    raw = project / "data/raw"
    for path, body in IMAGES.items():
        domain = "anime" if "anime" in path else "photo"
        assert (raw / domain / f"{hashlib.sha256(body).hexdigest()}.jpg").read_bytes() == body
    log = {r["url"]: r for r in map(json.loads, (raw / "crawl_log.jsonl").read_text().splitlines())}
    assert log[f"{base}/a.jpg"]["status"] == "ok" and log[f"{base}/a.jpg"]["license"] == "CC-BY"
    assert log[f"{base}/missing.jpg"]["reason"] == "http_404"
    assert log["file:///etc/passwd"]["reason"] == "bad_scheme"
    manifest = (project / "data/interim/photo/manifest.csv").read_text().splitlines()
    assert len(manifest) == 1 + 2 and all(",ok," in line for line in manifest[1:])

    # Both drivers agree nothing is left to do, and a re-run fetches nothing already fetched.
    assert "Nothing to be done" in run(["snakemake", "-n", "ingest"], project).stdout
    assert "Data and pipelines are up to date" in run(["dvc", "status", "--with-deps", "ingest"], project).stdout
    hits.clear()
    run(["toonlab", "crawl"], project)
    assert hits == ["/missing.jpg"]  # only the failed URL is tried again
