"""`toonlab curate`: processed faces -> curated manifests with a train/val/test split,
and a self-contained HTML curation report.

Inputs, per domain:

* the ingest manifest `<ingest_dir>/<domain>/manifest.parquet` (one row per raw file,
  see `toonlab.data.ingest`), and the raw files under `<raw_dir>/<domain>/`;
* the processed manifest `<processed_dir>/<domain>/manifest.parquet`: one row per
  detected face plus one row per image rejected at image level (`face_index` -1), with
  the aligned RGBA crops under `<processed_dir>/<domain>/`;
* the human review decisions `<review_dir>/<domain>.csv` (`toonlab.faces.review_decisions`, written
  by `toonlab review`), applied after the automatic checks: every row gains
  `auto_reason` and `decided_by`, and the report and summary.json count them (`review`).

Outputs:

* `<out_dir>/<domain>.parquet`: the `ok` rows of the processed manifest (all of its
  columns) plus a `split` column and the provenance columns `source_url`, `license`,
  `fetched_at` of the raw file (`toonlab.faces.provenance`, null when not from a crawl),
  sorted by (raw_path, face_index);
* `<report_dir>/index.html`: one self-contained page (CSS inline, every image a
  base64 data URI, no script, no external reference) with the counts per stage,
  contact sheets of kept crops and of rejected images per reason, histograms of the
  face measurements, the duplicate groups found by ingest, and the backends used;
* `<report_dir>/summary.json`: the counts of the report, for people and for DVC.

The report itself is drawn by `toonlab.faces.curate_report`. The split is a pure function of the raw image's sha256 and a salt (`assign_split`),
so every face of one image lands in the same split, adding images never moves the
others, and re-runs are stable. Everything is written atomically and the outputs are a
pure function of the inputs: no timestamps, sorted iteration, fixed image encoders.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from toonlab.errors import ToonlabError, UsageError
from toonlab.faces import provenance
from toonlab.faces.curate_report import FLOODFILL, SPLITS, DomainReport, Thumbs, plan_domain, render_html
from toonlab.faces.params import CurateParams, SplitParams
from toonlab.faces.review_decisions import apply_review_table, read_review, review_file
from toonlab.log import get_logger
from toonlab.util import fileio, tables

log = get_logger(__name__)

# Columns of the processed manifest that curation needs; the others are passed through.
REQUIRED_COLUMNS = ("raw_path", "sha256", "face_index", "status", "reason")

# ----------------------------------------------------------------------------- split


def _ratios(ratios: SplitParams | Mapping[str, float]) -> SplitParams:
    if isinstance(ratios, SplitParams):
        return ratios
    return SplitParams.model_validate(dict(ratios), strict=False)


def split_uniform(sha256: str, salt: str) -> float:
    """The image's position in [0, 1): the first 64 bits of sha256(salt NUL sha256)."""
    digest = hashlib.sha256(f"{salt}\0{sha256}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0 ** 64


def assign_split(sha256: str, face_index: int, ratios: SplitParams | Mapping[str, float],
                 salt: str) -> str:
    """'train', 'val' or 'test' for a face, deterministically from the hash of its image.

    `face_index` does not enter the hash: all faces of one raw image share a split, so
    no image contributes to two splits.
    """
    del face_index  # by design: the split is per image
    r = _ratios(ratios)
    u = split_uniform(sha256, salt)
    cum, last = 0.0, None
    for name in SPLITS:
        p = getattr(r, name)
        if p <= 0.0:
            continue
        cum += p
        last = name
        if u < cum:
            return name
    assert last is not None  # ratios sum to 1
    return last  # u beyond a cumulative sum a rounding error short of 1


# ----------------------------------------------------------------------------- inputs


def _load_processed(processed_dir: Path, domain: str):
    table = tables.read_table(processed_dir / domain / "manifest.parquet", f"processed manifest for '{domain}'",
                        "run `toonlab detect` (the face stage) first")
    missing = [c for c in REQUIRED_COLUMNS if c not in table.column_names]
    if missing:
        raise ToonlabError(f"processed manifest for '{domain}' lacks columns {missing}")
    return table


def curated_table(table, params: CurateParams):
    """The ok rows of a processed manifest, sorted by (raw_path, face_index), plus `split`."""
    import pyarrow as pa
    import pyarrow.compute as pc

    ok = table.filter(pc.equal(table["status"], "ok"))
    ok = ok.sort_by([("raw_path", "ascending"), ("face_index", "ascending")])
    shas = ok["sha256"].to_pylist()
    paths = ok["raw_path"].to_pylist()
    faces = ok["face_index"].to_pylist()
    splits = [assign_split(sha or f"path:{p}", int(i), params.split, params.salt)
              for sha, p, i in zip(shas, paths, faces)]
    if "split" in ok.column_names:
        ok = ok.drop_columns(["split"])
    return ok.append_column("split", pa.array(splits, type=pa.string()))


# ----------------------------------------------------------------------------- counts


def _by_reason(rows: Iterable[dict]) -> dict[str, int]:
    return dict(sorted(Counter(r.get("reason") or "(none)" for r in rows).items()))


def domain_stats(domain: str, ingest_rows: list[dict], processed_rows: list[dict],
                 curated_rows: list[dict]) -> dict[str, Any]:
    """The counts of one domain, per stage (plain data, JSON-ready, deterministic)."""
    ing_ok = [r for r in ingest_rows if r.get("status") == "ok"]
    ing_rej = [r for r in ingest_rows if r.get("status") != "ok"]
    faces = [r for r in processed_rows if int(r["face_index"]) >= 0]
    image_level = [r for r in processed_rows if int(r["face_index"]) < 0]
    face_rej = [r for r in faces if r["status"] != "ok"]
    img_rej = [r for r in image_level if r["status"] != "ok"]
    split_faces = Counter(r["split"] for r in curated_rows)
    split_images = {s: len({r["raw_path"] for r in curated_rows if r["split"] == s}) for s in SPLITS}
    backends = Counter()
    for r in processed_rows:
        for stage in ("detect", "matte"):
            name = r.get(f"{stage}_backend") or ""
            if name:
                backends[(stage, name, r.get(f"{stage}_version") or "")] += 1
    return {
        "domain": domain,
        "raw_files": len(ingest_rows),
        "ingest": {"ok": len(ing_ok), "rejected": len(ing_rej), "rejected_by_reason": _by_reason(ing_rej),
                   "duplicate_groups": len({r["dup_group"] for r in ingest_rows if r.get("dup_group")})},
        "faces": {
            "images": len({r["raw_path"] for r in processed_rows}),
            "images_with_faces": len({r["raw_path"] for r in faces}),
            "images_rejected": len({r["raw_path"] for r in img_rej}),
            "images_rejected_by_reason": _by_reason(img_rej),
            "images_kept": len({r["raw_path"] for r in curated_rows}),
            "detected": len(faces),
            "kept": sum(r["status"] == "ok" for r in processed_rows),
            "rejected": len(face_rej),
            "rejected_by_reason": _by_reason(face_rej),
        },
        "split": {s: {"faces": split_faces.get(s, 0), "images": split_images[s]} for s in SPLITS},
        "backends": [{"stage": s, "name": n, "version": v, "rows": c} for (s, n, v), c in sorted(backends.items())],
        "floodfill_matte": any((r.get("matte_backend") or "") == FLOODFILL for r in processed_rows),
        "licenses": provenance.license_counts(curated_rows),
    }


# ----------------------------------------------------------------------------- driver


def curate(domains: Sequence[str], raw_dir: str | Path, ingest_dir: str | Path, processed_dir: str | Path,
           params: CurateParams) -> dict[str, Any]:
    """Write `<out_dir>/<domain>.parquet` per domain, `<report_dir>/index.html` and
    `<report_dir>/summary.json`; return the summary (counts per domain and stage)."""
    raw_dir, ingest_dir, processed_dir = Path(raw_dir), Path(ingest_dir), Path(processed_dir)
    domains = list(dict.fromkeys(domains))
    if not domains:
        raise UsageError("curate: no domains given")
    out_dir, report_dir = Path(params.out_dir), Path(params.report_dir)
    thumbs = Thumbs(params.thumb_px)
    reports: dict[str, DomainReport] = {}
    # Human decisions (toonlab.faces.review_decisions), all read and checked before anything is written,
    # each under its shared lock (not while a review page is writing it).
    reviews = {d: read_review(review_file(params.review_dir, d)) for d in domains}
    for domain in domains:
        ingest_table = tables.read_table(ingest_dir / domain / "manifest.parquet", f"ingest manifest for '{domain}'",
                                         "run `toonlab ingest` first")
        table, review = apply_review_table(_load_processed(processed_dir, domain), reviews[domain],
                                           str(review_file(params.review_dir, domain)))
        cur = provenance.add_columns(curated_table(table, params), ingest_table.to_pylist())
        tables.write_parquet(cur, out_dir / f"{domain}.parquet")
        ingest_rows = ingest_table.to_pylist()
        processed_rows = sorted(table.to_pylist(), key=lambda r: (r["raw_path"], int(r["face_index"])))
        curated_rows = cur.to_pylist()
        stats = domain_stats(domain, ingest_rows, processed_rows, curated_rows)
        stats["review"] = review.as_dict()
        reports[domain] = plan_domain(domain, stats, ingest_rows, processed_rows, curated_rows, raw_dir / domain,
                                      processed_dir / domain, params, thumbs)
        sp = stats["split"]
        log.info("curate %s: %d faces kept of %d detected (%d images); split train %d / val %d / test %d faces",
                 domain, stats["faces"]["kept"], stats["faces"]["detected"], stats["faces"]["images"],
                 sp["train"]["faces"], sp["val"]["faces"], sp["test"]["faces"])
        if stats["floodfill_matte"]:
            log.warning("curate %s: mattes come from the '%s' fallback backend (lower quality)", domain, FLOODFILL)
    thumbs.render()
    fileio.write_text(report_dir / "index.html", render_html(reports, params))
    summary = {"domains": {d: rep.stats for d, rep in reports.items()},
               "params": params.model_dump(mode="json")}
    fileio.write_json(report_dir / "summary.json", summary)
    return summary
