"""`toonlab ingest`: manifest rows, reasons, duplicates, incremental runs."""

import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from toonlab.data.ingest import hamming, ingest_domain, near_pairs, phash, read_manifest
from toonlab.data.params import DecodeParams, IngestParams


def picture(seed: int, w: int = 160, h: int = 120) -> Image.Image:
    """A distinct natural-ish image: smooth random blobs."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    return Image.fromarray(small).resize((w, h), Image.BICUBIC)


def jpeg(img: Image.Image, quality: int = 92) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture
def crawl(tmp_path: Path) -> Path:
    raw = tmp_path / "raw" / "photo"
    (raw / "sub" / "deeper").mkdir(parents=True)
    files = {
        "a.jpg": jpeg(picture(1)),
        "b.png": png(picture(2)),
        "sub/c.jpg": jpeg(picture(3)),
        "sub/copy_of_a.jpg": jpeg(picture(1)),                           # exact duplicate of a.jpg
        "sub/deeper/a_small.jpg": jpeg(picture(1).resize((120, 90)), 70),  # near duplicate (smaller)
        "big_b.jpg": jpeg(picture(2).resize((320, 240)), 85),           # near duplicate, larger than b.png
        "empty.jpg": b"",
        "page.jpg": b"<html><body>not found</body></html>",
        "trunc.jpg": jpeg(picture(4))[:900],
        "tiny.png": png(picture(5, 20, 20)),
        "strip.png": png(picture(6, 400, 70)),
        "noext": jpeg(picture(7)),
    }
    for rel, data in files.items():
        (raw / rel).write_bytes(data)
    return tmp_path / "raw"


def run(raw: Path, tmp: Path, **kw) -> tuple[list[dict], object]:
    params = IngestParams(out_dir=str(tmp / "interim"), cache_dir=str(tmp / "cache"), **kw)
    stats = ingest_domain(raw, "photo", params, DecodeParams(), workers=2)
    return read_manifest(tmp / "interim" / "photo" / "manifest.parquet"), stats


def by_path(rows):
    return {r["path"]: r for r in rows}


def test_manifest_rows_and_reasons(crawl, tmp_path):
    rows, stats = run(crawl, tmp_path)
    r = by_path(rows)
    assert len(rows) == 12 and stats.files == 12
    assert [row["path"] for row in rows] == sorted(r)  # deterministic order
    assert r["a.jpg"]["status"] == "ok" and r["a.jpg"]["format"] == "JPEG"
    assert (r["a.jpg"]["width"], r["a.jpg"]["height"]) == (160, 120)
    assert r["a.jpg"]["sha256"] == __import__("hashlib").sha256((crawl / "photo/a.jpg").read_bytes()).hexdigest()
    assert r["noext"]["status"] == "ok"  # any extension, judged by content
    assert r["empty.jpg"]["reason"] == "empty_file"
    assert r["page.jpg"]["status"] == "rejected" and "html" in r["page.jpg"]["reason"]
    assert r["trunc.jpg"]["reason"] == "truncated"
    assert r["tiny.png"]["reason"] == "too_small"
    assert r["strip.png"]["reason"] == "extreme_aspect"
    for row in rows:
        assert row["status"] in ("ok", "rejected")
        assert (row["status"] == "ok") == (row["reason"] == "")


def test_duplicates_grouped_with_documented_representative(crawl, tmp_path):
    rows, _ = run(crawl, tmp_path)
    r = by_path(rows)
    # a.jpg and its byte copy and smaller re-encode: a.jpg is largest-then-earliest.
    group = r["a.jpg"]["dup_group"]
    assert group and r["sub/copy_of_a.jpg"]["dup_group"] == group == r["sub/deeper/a_small.jpg"]["dup_group"]
    assert r["a.jpg"]["status"] == "ok"
    assert r["sub/copy_of_a.jpg"]["reason"] == "exact_duplicate"
    assert r["sub/copy_of_a.jpg"]["duplicate_of"] == "a.jpg"
    assert r["sub/deeper/a_small.jpg"]["reason"] == "near_duplicate"
    # The larger re-encode of b wins over the original (largest resolution first).
    assert r["big_b.jpg"]["status"] == "ok" and r["b.png"]["reason"] == "near_duplicate"
    assert r["b.png"]["duplicate_of"] == "big_b.jpg"
    # Distinct pictures are not grouped.
    assert r["sub/c.jpg"]["dup_group"] == "" and r["sub/c.jpg"]["status"] == "ok"
    # Exact-only mode keeps near duplicates.
    rows2, _ = run(crawl, tmp_path / "exact", near_duplicates=False)
    r2 = by_path(rows2)
    assert r2["b.png"]["status"] == "ok" and r2["sub/copy_of_a.jpg"]["reason"] == "exact_duplicate"


def test_raw_files_never_modified(crawl, tmp_path):
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in crawl.rglob("*") if p.is_file()}
    run(crawl, tmp_path)
    after = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in crawl.rglob("*") if p.is_file()}
    assert before == after


def test_incremental_processes_only_new_files_and_matches_full_run(crawl, tmp_path):
    _, first = run(crawl, tmp_path)
    assert first.analysed == 12
    _, again = run(crawl, tmp_path)
    assert again.analysed == 0  # nothing changed: all from the cache
    (crawl / "photo" / "new.jpg").write_bytes(jpeg(picture(9)))
    (crawl / "photo" / "sub" / "another_copy.jpg").write_bytes((crawl / "photo" / "a.jpg").read_bytes())
    _, inc = run(crawl, tmp_path)
    assert inc.analysed == 2
    inc_bytes = {n: (tmp_path / "interim/photo" / n).read_bytes() for n in ("manifest.parquet", "manifest.csv", "summary.json")}
    # A full run from scratch (no cache) writes exactly the same bytes.
    _, full = run(crawl, tmp_path / "full")
    assert full.analysed == 14
    for name, data in inc_bytes.items():
        assert (tmp_path / "full/interim/photo" / name).read_bytes() == data, name


def test_changed_decode_settings_invalidate_cache(crawl, tmp_path):
    run(crawl, tmp_path)
    params = IngestParams(out_dir=str(tmp_path / "interim"), cache_dir=str(tmp_path / "cache"))
    stats = ingest_domain(crawl, "photo", params, DecodeParams(min_side=32), workers=1)
    assert stats.analysed == 12
    rows = read_manifest(tmp_path / "interim/photo/manifest.parquet")
    assert by_path(rows)["tiny.png"]["reason"] == "too_small"  # 20 px is still below 32


def test_unreadable_and_symlink_do_not_stop_the_run(crawl, tmp_path):
    os.symlink("/etc/passwd", crawl / "photo" / "link.jpg")
    (crawl / "photo" / "fifo_dir").mkdir()
    rows, _ = run(crawl, tmp_path)
    r = by_path(rows)
    assert r["link.jpg"]["reason"] == "symlink"
    assert r["a.jpg"]["status"] == "ok"


def test_phash_robust_to_resize_and_reencode_but_not_to_other_images():
    a = np.asarray(picture(11, 256, 256))
    a_small = np.asarray(Image.fromarray(a).resize((150, 150), Image.LANCZOS))
    a_jpeg = np.asarray(Image.open(io.BytesIO(jpeg(Image.fromarray(a), 60))))
    b = np.asarray(picture(12, 256, 256))
    assert hamming(phash(a), phash(a_small)) <= 4
    assert hamming(phash(a), phash(a_jpeg)) <= 4
    assert hamming(phash(a), phash(b)) > 10


def test_near_pairs_equals_brute_force():
    rng = np.random.default_rng(0)
    base = [int(x) for x in rng.integers(0, 2**63, 40, dtype=np.int64)]
    hashes = []
    for h in base:  # each base hash plus noisy copies
        hashes.append(h)
        for flips in (1, 3, 6):
            bits = rng.choice(64, flips, replace=False)
            hashes.append(h ^ int(sum(1 << int(b) for b in bits)))
    for t in (0, 2, 4, 6):
        brute = [(i, j) for i in range(len(hashes)) for j in range(i + 1, len(hashes))
                 if hamming(hashes[i], hashes[j]) <= t]
        assert near_pairs(hashes, t) == brute


def test_missing_domain_folder_is_a_clear_error(tmp_path):
    from toonlab.errors import UsageError

    with pytest.raises(UsageError, match="no raw folder for domain 'photo'"):
        run(tmp_path / "nothing", tmp_path)


# ----------------------------------------------------------------------------- provenance


def test_provenance_joined_from_crawl_log(crawl, tmp_path, caplog):
    """Files fetched by the crawler get url, license and fetch time from the crawl log's ok
    records (by sha256); several URLs with the same bytes keep the first by URL and are
    counted; files not from a crawl and failed records give no provenance."""
    import hashlib
    import json
    import logging

    sha = {rel: hashlib.sha256((crawl / "photo" / rel).read_bytes()).hexdigest()
           for rel in ("a.jpg", "b.png", "sub/c.jpg")}
    records = [
        {"url": "http://z.example/a.jpg", "status": "ok", "sha256": sha["a.jpg"], "license": "CC0",
         "fetched_at": "2026-01-02T00:00:00Z", "path": f"photo/{sha['a.jpg']}.jpg"},
        {"url": "http://m.example/a-again.jpg", "status": "ok", "sha256": sha["a.jpg"], "license": "CC-BY-4.0",
         "fetched_at": "2026-01-01T00:00:00Z", "path": f"photo/{sha['a.jpg']}.jpg"},
        {"url": "http://b.example/b.png", "status": "ok", "sha256": sha["b.png"], "license": None,
         "fetched_at": "2026-01-03T10:11:12Z", "path": f"photo/{sha['b.png']}.png"},
        {"url": "http://c.example/c.jpg", "status": "rejected", "sha256": sha["sub/c.jpg"], "license": "CC0",
         "fetched_at": "2026-01-03T00:00:00Z", "path": None},
    ]
    (crawl / "crawl_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records) + "{not json\n")
    with caplog.at_level(logging.WARNING, logger="toonlab"):
        rows, stats = run(crawl, tmp_path)
    assert "ignored 1 unreadable line" in caplog.text
    by = {r["path"]: r for r in rows}
    a = by["a.jpg"]
    assert (a["source_url"], a["license"], a["fetched_at"], a["source_urls"]) == (
        "http://m.example/a-again.jpg", "CC-BY-4.0", "2026-01-01T00:00:00Z", 2)
    assert by["sub/copy_of_a.jpg"]["source_url"] == "http://m.example/a-again.jpg"  # same bytes
    b = by["b.png"]
    assert (b["source_url"], b["license"], b["fetched_at"], b["source_urls"]) == (
        "http://b.example/b.png", None, "2026-01-03T10:11:12Z", 1)
    for rel in ("sub/c.jpg", "noext", "empty.jpg"):  # rejected download; not from a crawl
        r = by[rel]
        assert (r["source_url"], r["license"], r["fetched_at"], r["source_urls"]) == (None, None, None, 0), rel
    assert stats.summary["from_crawl"] == 3
    csv_head = (tmp_path / "interim/photo/manifest.csv").read_text().splitlines()[0]
    assert csv_head.endswith(",source_url,license,fetched_at,source_urls")


def test_missing_or_unreadable_crawl_log_is_not_an_error(crawl, tmp_path, caplog):
    import logging

    with caplog.at_level(logging.INFO, logger="toonlab"):
        rows, _ = run(crawl, tmp_path)
    assert "no crawl log at" in caplog.text
    assert all(r["source_url"] is None and r["source_urls"] == 0 for r in rows)
    (crawl / "crawl_log.jsonl").write_bytes(b"\xff\xfe not utf-8")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="toonlab"):
        rows, _ = run(crawl, tmp_path)
    assert "cannot read the crawl log" in caplog.text
    assert all(r["license"] is None for r in rows)
