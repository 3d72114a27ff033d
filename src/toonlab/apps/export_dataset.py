"""`toonlab export-dataset`: the curated faces as a plain, shareable dataset folder.

    <out>/<domain>/<split>/<sha256>_<face_index>.png   the aligned RGBA crop (`crop_<px>`), byte for byte
    <out>/manifest.csv, <out>/manifest.jsonl           one row per face, in file order
    <out>/LICENSES.md                                  faces (and source URLs) per license

Manifest columns (`COLUMNS`): file (relative to <out>), domain, split, raw_path (the raw
file relative to `<raw_dir>/<domain>/`, as ingest writes it), sha256 (of the raw file),
face_index, source_url, license, fetched_at (from the crawl log, see
`toonlab.faces.provenance`; empty / null for files not from a crawl).

The folder is built in a temporary sibling and swapped in at the end
(`fileio.atomic_dir`): an interrupted export leaves the previous folder, or none. An
existing non-empty folder is replaced only with `force`.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

from toonlab.errors import ToonlabError, UsageError
from toonlab.faces import provenance
from toonlab.log import get_logger
from toonlab.util import fileio, tables

log = get_logger(__name__)

SPLITS = ("train", "val", "test")
COLUMNS = ("file", "domain", "split", "raw_path", "sha256", "face_index", "source_url", "license", "fetched_at")


def _check_out(out: Path, force: bool) -> None:
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise UsageError(f"export-dataset: {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise UsageError(f"export-dataset: {out} is not empty; pass --force to replace it")


def licenses_md(rows: Sequence[dict]) -> str:
    """LICENSES.md: faces, images and source URLs per license, overall and per domain."""
    lines = ["# Licenses of the exported faces", "",
             "Each face's license is the `license` column of the URL list it was crawled from "
             "(see `manifest.csv`: `source_url`, `license`, `fetched_at` per face). "
             f"`{provenance.UNKNOWN_LICENSE}`: not from a crawl, or no license given; check those "
             "before sharing.", ""]

    def table(subset: Sequence[dict]) -> list[str]:
        out = ["| license | faces | images | source URLs |", "|---|---:|---:|---:|"]
        for lic, n in provenance.license_counts(subset).items():
            of = [r for r in subset if (r["license"] or provenance.UNKNOWN_LICENSE) == lic]
            out.append(f"| {lic.replace('|', '/')} | {n} | {len({(r['domain'], r['sha256']) for r in of})} "
                       f"| {len({r['source_url'] for r in of if r['source_url']})} |")
        return out

    lines += ["## All domains", "", *table(rows), ""]
    for domain in sorted({r["domain"] for r in rows}):
        lines += [f"## {domain}", "", *table([r for r in rows if r["domain"] == domain]), ""]
    if not rows:
        lines += ["No faces were exported.", ""]
    return "\n".join(lines)


def export_dataset(out: str | Path, domains: Sequence[str], curated_dir: str | Path, processed_dir: str | Path,
                   splits: Sequence[str] = SPLITS, px: int = 256, force: bool = False) -> dict[str, Any]:
    """Write the export folder; return {"out", "faces", "by_domain": {domain: {split: n}}, "licenses"}."""
    out, curated_dir, processed_dir = Path(out), Path(curated_dir), Path(processed_dir)
    domains, splits = list(dict.fromkeys(domains)), list(dict.fromkeys(splits))
    if not domains:
        raise UsageError("export-dataset: no domains given")
    bad = sorted(set(splits) - set(SPLITS))
    if bad or not splits:
        raise UsageError(f"export-dataset: unknown splits {bad}; expected some of {', '.join(SPLITS)}")
    _check_out(out, force)
    for inside in (curated_dir, processed_dir):
        if out.resolve() == inside.resolve() or out.resolve() in inside.resolve().parents:
            raise UsageError(f"export-dataset: {out} holds the inputs ({inside}); pick another folder")
    col = f"crop_{px}"
    plan: list[tuple[Path, dict]] = []  # (crop file, manifest row)
    for domain in domains:
        manifest = curated_dir / f"{domain}.parquet"
        table = tables.read_table(manifest, f"curated manifest for '{domain}'", "run `toonlab curate` first")
        missing = [c for c in ("raw_path", "sha256", "face_index", "split", col) if c not in table.column_names]
        if missing:
            raise ToonlabError(f"curated manifest {manifest} lacks columns {missing}")
        for r in table.to_pylist():
            if r["split"] not in splits:
                continue
            if not r.get(col):
                raise ToonlabError(f"{domain}: {r['raw_path']} face {r['face_index']} has no {col}")
            rec = provenance.record(r, "split")
            name = f"{domain}/{r['split']}/{r['sha256']}_{rec['face_index']}.png"
            plan.append((processed_dir / domain / r[col], {"file": name, "domain": domain, **rec}))
    rows = [{k: row[k] for k in COLUMNS} for _, row in plan]
    dupes = [f for f, n in Counter(r["file"] for r in rows).items() if n > 1]
    if dupes:
        raise ToonlabError(f"export-dataset: two faces would share the file name {dupes[0]}")

    with fileio.atomic_dir(out) as tmp:
        for src, row in plan:
            dst = tmp / row["file"]
            dst.parent.mkdir(parents=True, exist_ok=True)
            try:
                shutil.copyfile(src, dst)
            except FileNotFoundError:
                raise ToonlabError(f"missing crop {src} (re-run the face stage)") from None
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(COLUMNS)
        writer.writerows([["" if r[k] is None else r[k] for k in COLUMNS] for r in rows])
        (tmp / "manifest.csv").write_text(text.getvalue(), encoding="utf-8")
        (tmp / "manifest.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                                            encoding="utf-8")
        (tmp / "LICENSES.md").write_text(licenses_md(rows), encoding="utf-8")
    by_domain = {d: {s: sum(r["domain"] == d and r["split"] == s for r in rows) for s in splits} for d in domains}
    licenses = provenance.license_counts(rows)
    log.info("export-dataset: %d faces (%s) -> %s; licenses: %s", len(rows),
             ", ".join(f"{d} {sum(c.values())}" for d, c in by_domain.items()), out,
             ", ".join(f"{k} {v}" for k, v in licenses.items()) or "none")
    return {"out": str(out), "faces": len(rows), "by_domain": by_domain, "licenses": licenses}
