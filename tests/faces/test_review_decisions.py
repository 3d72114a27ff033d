"""Human review decisions (toonlab.faces.review_decisions): the file format, its validation, and how
curate applies the decisions, on small hand-made manifests."""

from __future__ import annotations

import logging

import pytest

from toonlab.cli import main
from toonlab.faces.review_decisions import (
    COLUMNS,
    HUMAN_REJECT,
    Decision,
    ReviewError,
    apply_review,
    load_review,
    parse_review,
    pending,
    write_review,
)

A, B, C, GONE = ("a" * 64, "b" * 64, "c" * 64, "d" * 64)
HEADER = ",".join(COLUMNS) + "\n"


def _rows() -> list[dict]:
    """A processed manifest: image A with a kept face 0 and a face 1 rejected for yaw (with
    its crop), image B rejected at image level, image C with a blurry face and no crop."""
    return [
        {"raw_path": "a.jpg", "sha256": A, "face_index": 0, "status": "ok", "reason": "", "detail": "",
         "crop_256": "256/a_0.png", "crop_128": "128/a_0.png"},
        {"raw_path": "a.jpg", "sha256": A, "face_index": 1, "status": "rejected", "reason": "extreme_yaw",
         "detail": "yaw 63 > 45", "crop_256": "256/a_1.png", "crop_128": "128/a_1.png"},
        {"raw_path": "b.jpg", "sha256": B, "face_index": -1, "status": "rejected", "reason": "no_face",
         "detail": "", "crop_256": "", "crop_128": ""},
        {"raw_path": "c.jpg", "sha256": C, "face_index": 0, "status": "rejected", "reason": "blurry",
         "detail": "", "crop_256": "", "crop_128": ""},
    ]


def _decisions(*ds: Decision) -> dict:
    return {d.key: d for d in ds}


# ----------------------------------------------------------------------------- the file


def test_round_trip_sorted_and_missing_file_is_no_decision(tmp_path):
    path = tmp_path / "review" / "photo.csv"
    assert load_review(path) == {}
    ds = [Decision(B, -1, "keep", note="has, a comma", who="ann", when="2026-12-06T12:00:00Z"),
          Decision(A, 1, "keep", "fine"), Decision(A, 0, "reject", "closed_eyes")]
    write_review(path, ds)
    text = path.read_text()
    assert text.splitlines()[0] == HEADER.strip()
    assert [line.split(",")[:3] for line in text.splitlines()[1:3]] == [[A, "0", "reject"], [A, "1", "keep"]]
    got = load_review(path)
    assert set(got) == {(A, 0), (A, 1), (B, -1)}
    assert got[(B, -1)].note == "has, a comma" and got[(B, -1)].who == "ann"
    assert got[(A, 0)].line == 2
    path.write_text(HEADER)                      # the committed, empty file
    assert load_review(path) == {}
    path.write_text("sha256,face_index,decision\n" + A.upper() + ",0,REJECT\n\n")  # optional columns, case
    assert load_review(path)[(A, 0)].decision == "reject"


def test_bad_rows_are_named_by_file_and_line(tmp_path):
    path = tmp_path / "photo.csv"
    path.write_text(HEADER + f"{A},0,reject,,,,\n"
                    f"{A[:10]},0,keep,,,,\n"         # line 3: short hash
                    f"{B},x,keep,,,,\n"              # line 4: bad index
                    f"{B},0,maybe,,,,\n"             # line 5: unknown decision
                    f"{A},0,keep,,,,\n")             # line 6: duplicate of line 2
    with pytest.raises(ReviewError) as err:
        load_review(path)
    msg = str(err.value)
    assert f"{path}, line 3: sha256 must be 64 hex digits" in msg
    assert f"{path}, line 4: face_index must be an integer" in msg
    assert f"{path}, line 5: decision must be one of reject, keep, got 'maybe'" in msg
    assert f"{path}, line 6: face 0 of {A[:12]}... already has a decision on line 2" in msg
    with pytest.raises(ReviewError, match=r"line 1: the header lacks column\(s\) decision and has unknown "
                                          r"column\(s\) 'verdict'"):
        parse_review("sha256,face_index,verdict\n", "x.csv")


def test_curate_refuses_a_bad_review_file_cleanly(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data/review").mkdir(parents=True)
    (tmp_path / "data/review/photo.csv").write_text(HEADER + f"{A},0,discard,,,,\n")
    (tmp_path / "params.yaml").write_text("{}\n")
    assert main(["curate"]) == 2
    err = capsys.readouterr().err
    assert "data/review/photo.csv, line 2: decision must be one of reject, keep" in err
    assert "Traceback" not in err


# ----------------------------------------------------------------------------- applying


def test_reject_a_kept_face_and_rescue_a_threshold_rejected_one():
    rows = _rows()
    out, res = apply_review(rows, _decisions(Decision(A, 0, "reject", "closed_eyes"), Decision(A, 1, "keep")))
    by = {(r["sha256"], r["face_index"]): r for r in out}
    assert by[(A, 0)]["status"] == "rejected" and by[(A, 0)]["reason"] == HUMAN_REJECT
    assert by[(A, 0)]["decided_by"] == "human" and by[(A, 0)]["auto_reason"] == ""
    assert by[(A, 1)]["status"] == "ok" and by[(A, 1)]["reason"] == ""
    assert by[(A, 1)]["auto_reason"] == "extreme_yaw" and by[(A, 1)]["decided_by"] == "human"
    assert by[(C, 0)]["decided_by"] == "auto" and by[(C, 0)]["auto_reason"] == "blurry"
    assert (res.rejected, res.rescued, res.confirmed) == (1, 1, 0)
    assert res.by_decision_reason == {"keep": {"(none)": 1}, "reject": {"closed_eyes": 1}}
    assert rows[0]["status"] == "ok"             # the input is not changed


def test_stale_and_image_level_decisions_are_reported(caplog):
    ds = _decisions(Decision(GONE, 0, "reject", line=2), Decision(B, -1, "keep", line=3),
                    Decision(C, 0, "keep", line=4), Decision(A, 0, "keep", line=5))
    with caplog.at_level(logging.WARNING, logger="toonlab"):
        out, res = apply_review(_rows(), ds, "data/review/photo.csv")
    assert [r["status"] for r in out] == ["ok", "rejected", "rejected", "rejected"]
    assert [(s["sha256"], s["line"]) for s in res.stale] == [(GONE, 2)]
    assert [(s["sha256"], s["why"]) for s in res.refused] == [(B, "image_level"), (C, "no_crop")]
    assert res.confirmed == 1                    # keep of a kept face: nothing to change
    summary = res.as_dict()
    assert len(summary["stale"]) == 1 and len(summary["refused"]) == 2
    assert "data/review/photo.csv line 2: no face 0 of image dddddddddddd" in caplog.text
    assert "line 3: keep of face -1" in caplog.text and "image-level rejection" in caplog.text


def test_pending_compares_the_file_with_the_last_curated_manifest():
    rows = _rows()
    ds = _decisions(Decision(A, 0, "reject"), Decision(A, 1, "keep"), Decision(GONE, 0, "reject"))
    curated_before = {(A, 0)}                    # the last curate run saw no decision
    got = pending(ds, rows, curated_before)
    assert [(p["sha256"], p["face_index"], p["change"]) for p in got] == [(A, 0, "reject"), (A, 1, "keep")]
    assert pending(ds, rows, {(A, 1)}) == []     # applied: nothing pending (the stale one never is)
    undone = pending({}, rows, {(A, 1)})         # both decisions removed from the file afterwards
    assert [(p["face_index"], p["change"]) for p in undone] == [(0, "undo_reject"), (1, "undo_keep")]
