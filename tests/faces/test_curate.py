"""Curation: deterministic split, curated manifests, self-contained HTML report."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image
from pydantic import ValidationError

from toonlab.data.ingest import COLUMNS, write_manifest
from toonlab.errors import UsageError
from toonlab.faces.curate import assign_split, curate
from toonlab.faces.params import CurateParams, SplitParams

PROCESSED_SCHEMA = pa.schema([
    ("domain", pa.string()), ("raw_path", pa.string()), ("sha256", pa.string()), ("face_index", pa.int32()),
    ("status", pa.string()), ("reason", pa.string()), ("detail", pa.string()),
    ("crop_256", pa.string()), ("crop_128", pa.string()), ("box", pa.list_(pa.float32())),
    ("score", pa.float32()), ("face_px", pa.float32()), ("yaw", pa.float32()), ("blur", pa.float32()),
    ("bg_fraction", pa.float32()), ("five_256", pa.list_(pa.float32())), ("landmarks_256", pa.list_(pa.float32())),
    ("detect_backend", pa.string()), ("detect_version", pa.string()),
    ("matte_backend", pa.string()), ("matte_version", pa.string()),
])

FACE_REASONS = ["not_largest_face", "face_too_small", "extreme_yaw", "blurry"]
IMAGE_REASONS = ["no_face", "multiple_faces"]
INGEST_REASONS = ["truncated", "not_an_image", "exact_duplicate", "near_duplicate"]
FIVE = [96.0, 118.0, 160.0, 118.0, 128.0, 154.5, 101.5, 192.0, 154.5, 192.0]


# ----------------------------------------------------------------------------- fixture


def _picture(w: int, h: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.dstack([(xx * 255 // max(1, w - 1)), (yy * 255 // max(1, h - 1)), np.full_like(xx, 40 * (seed % 6))])
    noise = rng.integers(0, 40, size=(h, w, 3))
    return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))


def _save_crop(path: Path, px: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    rgba = rng.integers(0, 256, size=(px, px, 4), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgba).save(path)


def _ingest_row(rel: str, domain: str, data: bytes | None, w: int = 0, h: int = 0, **kw) -> dict:
    row = {name: ("" if kind == "string" else 0) for name, kind in COLUMNS}
    row.update(path=rel, domain=domain, animated=False, orientation=1, status="ok")
    if data is not None:
        row.update(sha256=hashlib.sha256(data).hexdigest(), bytes=len(data), width=w, height=h, mode="RGB",
                   format="PNG", frames=1, phash="0" * 16)
    row.update(kw)
    return row


def build_domain(root: Path, domain: str, matte: str, seed: int) -> None:
    raw, ing, proc = root / "raw" / domain, root / "interim" / domain, root / "processed" / domain
    raw.mkdir(parents=True)
    ingest_rows: list[dict] = []
    processed: list[dict] = []
    # image name -> list of (face_index, status, reason); face_index -1: image-level row
    plan = {
        "a.png": [(0, "ok", "")],
        "b.png": [(0, "ok", ""), (1, "rejected", "not_largest_face")],
        "sub/c.png": [(-1, "rejected", "no_face")],
        "d.png": [(0, "rejected", "face_too_small")],
        "e.png": [(0, "rejected", "extreme_yaw")],
        "f.png": [(0, "rejected", "blurry")],
        "g.png": [(-1, "rejected", "multiple_faces")],
        "h.png": [(0, "ok", ""), (1, "ok", "")],
        "i.png": [(0, "ok", "")],
        "j.png": [(0, "ok", "")],
    }
    for k, (name, faces) in enumerate(sorted(plan.items())):
        w, h = 160 + 8 * k, 120 + 4 * k
        im = _picture(w, h, seed + k)
        (raw / name).parent.mkdir(parents=True, exist_ok=True)
        im.save(raw / name)
        data = (raw / name).read_bytes()
        sha = hashlib.sha256(data).hexdigest()
        group = sha[:12] if name == "a.png" else ""
        ingest_rows.append(_ingest_row(name, domain, data, w, h, dup_group=group))
        for fi, status, reason in faces:
            row = {f.name: None for f in PROCESSED_SCHEMA}
            row.update(domain=domain, raw_path=name, sha256=sha, face_index=fi, status=status, reason=reason,
                       detail=f"{reason} detail" if reason else "", crop_256="", crop_128="", box=[],
                       five_256=[], landmarks_256=[], detect_backend="mediapipe" if domain == "photo" else "animeface",
                       detect_version="0.10.9", matte_backend=matte, matte_version="1.0")
            if fi >= 0:
                x0, y0 = 20.0 + 10 * fi, 15.0
                row.update(box=[x0, y0, x0 + 60.0, y0 + 70.0], score=0.9, face_px=60.0 + 5 * k + fi,
                           yaw=float(-40 + 9 * k), blur=float(50 + 30 * k), bg_fraction=0.1 + 0.05 * k,
                           five_256=FIVE, landmarks_256=FIVE + FIVE)
            if status == "ok":
                for px in (256, 128):
                    rel = f"{px}/{sha[:12]}_{fi}.png"
                    _save_crop(proc / rel, px, seed + 100 * k + fi + px)
                    row[f"crop_{px}"] = rel
            processed.append(row)
    # exact duplicate of a.png, a near duplicate, and two undecodable files
    a = raw / "a.png"
    (raw / "copies").mkdir()
    (raw / "copies" / "a_copy.png").write_bytes(a.read_bytes())
    Image.open(a).resize((80, 60)).save(raw / "copies" / "a_small.png")
    rep_sha = hashlib.sha256(a.read_bytes()).hexdigest()
    ingest_rows.append(_ingest_row("copies/a_copy.png", domain, a.read_bytes(), 160, 120, status="rejected",
                                   reason="exact_duplicate", dup_group=rep_sha[:12], duplicate_of="a.png"))
    ingest_rows.append(_ingest_row("copies/a_small.png", domain, (raw / "copies" / "a_small.png").read_bytes(),
                                   80, 60, status="rejected", reason="near_duplicate", dup_group=rep_sha[:12],
                                   duplicate_of="a.png"))
    (raw / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\0" * 50)
    ingest_rows.append(_ingest_row("broken.jpg", domain, None, status="rejected", reason="truncated",
                                   detail="image file is truncated"))
    (raw / "notes.txt").write_text("hello <b>world</b>")
    ingest_rows.append(_ingest_row("notes.txt", domain, None, status="rejected", reason="not_an_image",
                                   detail="text file"))
    ingest_rows.sort(key=lambda r: r["path"])
    write_manifest(ingest_rows, ing)
    table = pa.Table.from_pylist(processed[::-1], schema=PROCESSED_SCHEMA)  # unsorted on purpose
    proc.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, proc / "manifest.parquet")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("curate_inputs")
    build_domain(root, "photo", "rembg:u2net_human_seg", seed=1)
    build_domain(root, "anime", "floodfill", seed=50)
    return root


def run_curate(root: Path, out: Path, domains=("photo", "anime"), **kw) -> tuple[dict, CurateParams]:
    params = CurateParams(out_dir=str(out / "curated"), report_dir=str(out / "report"), thumb_px=48,
                          contact_sheet_max=6, **kw)
    summary = curate(list(domains), root / "raw", root / "interim", root / "processed", params)
    return summary, params


@pytest.fixture(scope="module")
def curated(inputs, tmp_path_factory) -> tuple[Path, dict, CurateParams]:
    out = tmp_path_factory.mktemp("curate_out")
    summary, params = run_curate(inputs, out)
    return out, summary, params


# ----------------------------------------------------------------------------- split


def test_split_is_deterministic_and_follows_the_ratios():
    ratios = SplitParams()
    shas = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(2000)]
    first = [assign_split(s, 0, ratios, "toonlab") for s in shas]
    assert first == [assign_split(s, 0, ratios, "toonlab") for s in shas]
    for name, want in (("train", 0.8), ("val", 0.1), ("test", 0.1)):
        assert abs(first.count(name) / len(shas) - want) < 0.03, name
    # every face of one image goes to the image's split
    assert all(assign_split(s, i, ratios, "toonlab") == sp for s, sp in zip(shas[:200], first) for i in (1, 5, -1))
    # the salt changes the draw
    other = [assign_split(s, 0, ratios, "other") for s in shas]
    assert other != first


def test_split_custom_ratios_and_mapping():
    shas = [hashlib.sha256(f"x{i}".encode()).hexdigest() for i in range(2000)]
    got = [assign_split(s, 0, {"train": 0.5, "val": 0.5, "test": 0.0}, "s") for s in shas]
    assert "test" not in got
    assert abs(got.count("val") / len(got) - 0.5) < 0.03
    only = [assign_split(s, 0, SplitParams(train=0.0, val=0.0, test=1.0), "s") for s in shas[:100]]
    assert set(only) == {"test"}


@pytest.mark.parametrize("split", [{"train": 0.7, "val": 0.1, "test": 0.1}, {"train": 0.9, "val": 0.1, "test": 0.1}])
def test_invalid_ratios_are_rejected_naming_the_keys(split):
    with pytest.raises(ValidationError) as info:
        CurateParams(split=split)
    msg = str(info.value)
    assert "train" in msg and "val" in msg and "test" in msg and "sum to 1" in msg


def test_params_are_strict():
    with pytest.raises(ValidationError):
        CurateParams(split={"train": 0.8, "val": 0.1, "tset": 0.1})
    with pytest.raises(ValidationError):
        CurateParams(split={"train": 1.2, "val": -0.1, "test": -0.1})
    with pytest.raises(ValidationError):
        CurateParams(thumb_px=0)
    with pytest.raises(ValidationError):
        CurateParams(unknown=1)
    assert CurateParams(split={"train": 1, "val": 0, "test": 0}).split.train == 1.0


# ----------------------------------------------------------------------------- outputs


def test_curated_manifest_holds_ok_rows_with_split(inputs, curated):
    out, summary, params = curated
    for domain in ("photo", "anime"):
        table = pq.read_table(out / "curated" / f"{domain}.parquet")
        source = pq.read_table(inputs / "processed" / domain / "manifest.parquet")
        provenance_columns = ["source_url", "license", "fetched_at"]  # appended last (toonlab.faces.provenance)
        assert table.column_names[-3:] == provenance_columns
        # + what the human review did (toonlab.faces.review_decisions; no review file here: all "auto")
        assert table.column_names[:-3] == source.column_names + ["auto_reason", "decided_by", "split"]
        assert set(table["decided_by"].to_pylist()) == {"auto"}
        assert table["license"].null_count == len(table)  # files not from a crawl
        assert table.schema.field("face_index").type == pa.int32()
        rows = table.to_pylist()
        assert len(rows) == sum(s == "ok" for s in source["status"].to_pylist()) == 6
        assert all(r["status"] == "ok" and r["reason"] == "" for r in rows)
        keys = [(r["raw_path"], r["face_index"]) for r in rows]
        assert keys == sorted(keys)
        for r in rows:
            assert r["split"] == assign_split(r["sha256"], r["face_index"], params.split, params.salt)
        by_image: dict[str, set] = {}
        for r in rows:
            by_image.setdefault(r["raw_path"], set()).add(r["split"])
        assert all(len(s) == 1 for s in by_image.values())
        stats = summary["domains"][domain]
        assert sum(v["faces"] for v in stats["split"].values()) == 6
        assert stats["raw_files"] == 14
        assert stats["faces"]["images_with_faces"] == 8
        assert stats["faces"]["rejected_by_reason"] == {r: 1 for r in sorted(FACE_REASONS)}
        assert stats["faces"]["images_rejected_by_reason"] == {r: 1 for r in sorted(IMAGE_REASONS)}
        assert stats["ingest"]["rejected_by_reason"] == {r: 1 for r in sorted(INGEST_REASONS)}
        assert stats["ingest"]["duplicate_groups"] == 1
    assert summary["domains"]["anime"]["floodfill_matte"] is True
    assert summary["domains"]["photo"]["floodfill_matte"] is False
    assert summary["domains"]["photo"]["licenses"] == {"unknown": 6}  # kept faces, none from a crawl
    assert (out / "report" / "summary.json").is_file()


def _external_refs(text: str) -> list[str]:
    bad = []
    for tag, attr, value in re.findall(r"<(\w+)[^>]*?\s(src|href)\s*=\s*[\"']?([^\"'\s>]*)", text, flags=re.I):
        if not (value.startswith("data:") or (attr.lower() == "href" and value.startswith("#"))):
            bad.append(f"<{tag} {attr}={value[:40]}>")
    return bad


def test_report_is_self_contained_and_complete(curated):
    out, _, _ = curated
    page = out / "report" / "index.html"
    text = page.read_text(encoding="utf-8")
    assert "http://" not in text and "https://" not in text
    assert "<script" not in text.lower() and "<link" not in text.lower()
    assert _external_refs(text) == []
    assert "url(" not in text  # no CSS references either
    for reason in FACE_REASONS + IMAGE_REASONS + INGEST_REASONS:
        assert reason in text, reason
    assert 'class="warning floodfill"' in text
    assert "floodfill" in text and "mediapipe" in text and "animeface" in text and "0.10.9" in text
    assert text.count("data:image/png;base64,") == 2  # one histogram figure per domain
    assert text.count("data:image/jpeg;base64,") > 20  # thumbnails
    assert 'class="rep"' in text  # representative of the duplicate group is marked
    assert "a_copy.png" in text and "c.png" in text
    assert "hello <b>" not in text  # file contents never leak in; names are escaped
    for domain in ("photo", "anime"):
        assert f'id="domain-{domain}"' in text
    # nothing half-written left behind
    assert not [p for p in (out / "report").iterdir() if p.name.startswith(".")]
    assert not [p for p in (out / "curated").iterdir() if p.name.startswith(".")]


def test_outputs_are_byte_identical_across_runs(inputs, curated, tmp_path):
    out, _, _ = curated
    run_curate(inputs, tmp_path)
    for rel in ("report/index.html", "report/summary.json", "curated/photo.parquet", "curated/anime.parquet"):
        a, b = (out / rel).read_bytes(), (tmp_path / rel).read_bytes()
        if rel == "report/summary.json":  # holds the (different) output folders
            a = a.replace(str(out).encode(), b"X")
            b = b.replace(str(tmp_path).encode(), b"X")
        assert a == b, rel


def test_no_floodfill_warning_without_floodfill(inputs, tmp_path):
    run_curate(inputs, tmp_path, domains=["photo"])
    text = (tmp_path / "report" / "index.html").read_text(encoding="utf-8")
    assert 'class="warning' not in text
    assert "rembg:u2net_human_seg" in text
    assert not (tmp_path / "curated" / "anime.parquet").exists()


def test_missing_inputs_are_usage_errors(inputs, tmp_path):
    with pytest.raises(UsageError, match="processed manifest"):
        curate(["photo"], inputs / "raw", inputs / "interim", tmp_path / "nowhere",
               CurateParams(out_dir=str(tmp_path / "c"), report_dir=str(tmp_path / "r")))
    with pytest.raises(UsageError, match="ingest manifest"):
        curate(["photo"], inputs / "raw", tmp_path / "nowhere", inputs / "processed",
               CurateParams(out_dir=str(tmp_path / "c"), report_dir=str(tmp_path / "r")))


# ----------------------------------------------------------------------------- markup in the data


def test_report_shows_markup_as_text(tmp_path):
    """Markup in every field the page prints (domain, file and folder names, reasons,
    details, group id, backends, license, salt, review reasons and file) is text."""
    from test_pages_escaping import evil, shown_as_text
    from toonlab.faces.review_decisions import Decision, write_review

    domain = "dom" + evil("domain")
    raw, ing, proc = tmp_path / "raw" / domain, tmp_path / "interim" / domain, tmp_path / "processed" / domain
    names = {"kept": f"k{evil('kept_file')}.png", "human": f"h{evil('human_file')}.png",
             "rejected": f"r{evil('rejected_file')}.png", "dup": f"d{evil('dup_file')}.png"}
    ingest_rows, processed = [], []
    for k, (role, name) in enumerate(names.items()):
        (raw / name).parent.mkdir(parents=True, exist_ok=True)
        _picture(120, 100, k).save(raw / name)
        data = (raw / name).read_bytes()
        sha = hashlib.sha256(data).hexdigest()
        extra = {"license": evil("license")} if role == "kept" else {}
        if role == "dup":
            extra = {"status": "rejected", "reason": "exact_duplicate", "dup_group": evil("group"),
                     "duplicate_of": names["kept"]}
        elif role == "kept":
            extra["dup_group"] = evil("group")
        ingest_rows.append(_ingest_row(name, domain, data, 120, 100, **extra))
        if role == "dup":
            continue
        row = {f.name: None for f in PROCESSED_SCHEMA}
        row.update(domain=domain, raw_path=name, sha256=sha, face_index=0, status="ok", reason="", detail="",
                   crop_256="", crop_128="", box=[10.0, 10.0, 60.0, 70.0], five_256=[], landmarks_256=[],
                   detect_backend=evil("backend"), detect_version=evil("version"), matte_backend="rembg",
                   matte_version="1", score=0.9, face_px=50.0, yaw=1.0, blur=100.0, bg_fraction=0.2)
        if role == "rejected":
            row.update(status="rejected", reason=evil("reason"), detail=evil("detail"))
        else:
            for px in (256, 128):
                _save_crop(proc / f"{px}/{sha[:12]}.png", px, k)
                row[f"crop_{px}"] = f"{px}/{sha[:12]}.png"
        processed.append(row)
    (raw / "bad.txt").write_text("not an image")
    ingest_rows.append(_ingest_row(f"i{evil('ingest_file')}.txt", domain, None, status="rejected",
                                   reason=evil("ingest_reason"), detail=evil("ingest_detail")))
    write_manifest(sorted(ingest_rows, key=lambda r: r["path"]), ing)
    proc.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(processed, schema=PROCESSED_SCHEMA), proc / "manifest.parquet")
    review_dir = tmp_path / ("review" + evil("review_dir"))
    human = next(r for r in processed if r["raw_path"] == names["human"])
    write_review(review_dir / f"{domain}.csv", [
        Decision(human["sha256"], 0, "reject", evil("decision_reason")),
        Decision("0" * 64, 3, "keep", "gone")])                              # stale: listed, not applied

    run_curate(tmp_path, tmp_path / "out", domains=[domain], salt=evil("salt"), review_dir=str(review_dir))
    text = (tmp_path / "out" / "report" / "index.html").read_text(encoding="utf-8")
    shown_as_text(text, ["domain", "kept_file", "human_file", "rejected_file", "dup_file", "license", "group",
                         "reason", "detail", "backend", "version", "ingest_file", "ingest_reason", "ingest_detail",
                         "review_dir", "decision_reason", "salt"])
