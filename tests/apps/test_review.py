"""`toonlab review` round trip: the face stages on a small real demo (a group photo with
a face rejected for its yaw, a photo without a face, a drawn anime portrait), the review
page in a subprocess driven by the keyboard in headless Chromium, the review file it
writes, then `toonlab curate` applying it."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from skimage import data as skdata
from test_serve import _driver  # the headless Chromium helper (fails with the reason when it cannot start)

from servers import start, stop
from toonlab.cli import main
from toonlab.data.demo import package_file
from toonlab.util.tables import read_rows

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("review")
    raw = root / "data/raw"
    (raw / "photo").mkdir(parents=True)
    (raw / "anime").mkdir(parents=True)
    shutil.copy(package_file("insightface", "data/images/t1.jpg"), raw / "photo/group.jpg")
    small = Image.open(raw / "photo/group.jpg")
    small.resize((small.width * 3 // 4, small.height * 3 // 4)).save(raw / "photo/group_copy.jpg", quality=85)
    Image.fromarray(skdata.coffee()).save(raw / "photo/coffee.png")  # no face
    from toonlab.data.anime_draw import draw_portrait

    draw_portrait(np.random.default_rng([0, 2, 0]), 384).save(raw / "anime/p0.png")
    params = {"runtime": {"workers": 2}, "preprocess": {"multi_face": "keep_all", "max_bg_fraction": 1.0}}
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    (root / "data/review").mkdir()
    (root / "data/review/photo.csv").write_text((REPO / "data/review/photo.csv").read_text())
    cwd = Path.cwd()
    os.chdir(root)
    try:
        for stage in ("ingest", "detect", "matte", "align", "curate"):
            assert main([stage]) == 0, stage
    finally:
        os.chdir(cwd)
    return root


def _faces(url: str, domain: str = "photo") -> dict:
    with urllib.request.urlopen(f"{url}api/faces?domain={domain}", timeout=60) as r:
        return json.loads(r.read())


@pytest.mark.slow  # a headless browser: not in `make test-fast`
def test_review_round_trip_in_headless_chromium(demo):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    before = {(r["raw_path"], r["face_index"]): r for r in read_rows(demo / "data/processed/photo/manifest.parquet")}
    # Faces 0 and 1 of the group photo are the two largest (their order can swap with a
    # detector change: sizes within 2%): one kept, one rejected for its yaw.
    by_status = {before[("group.jpg", k)]["reason"] or "ok": k for k in (0, 1)}
    ok_i, yaw_i = by_status["ok"], by_status["extreme_yaw"]
    assert before[("group.jpg", yaw_i)]["crop_256"]
    sha = before[("group.jpg", 0)]["sha256"]
    proc, url, _ = start(["review", "--port", "0"], demo)
    drv = _driver()
    try:
        drv.get(url)
        assert drv.title == "ToonLab review"
        wait = WebDriverWait(drv, 60)
        wait.until(lambda d: "faces" in d.find_element(By.ID, "count").text)
        assert drv.find_element(By.ID, "count").text == "7 of 7 faces"
        body = drv.find_element(By.TAG_NAME, "body")

        def saved(n):
            wait.until(lambda d: d.execute_script("return document.body.dataset.saved") == str(n))

        # Reject the first kept face with the keyboard.
        Select(drv.find_element(By.ID, "state")).select_by_value("kept")
        assert drv.find_element(By.ID, "count").text == "5 of 7 faces"
        body.send_keys("j", "k")                                  # next, previous: back on the first
        assert f"group.jpg</strong> face {ok_i}" in drv.find_element(By.ID, "detail").get_attribute("innerHTML")
        crop = drv.find_element(By.CSS_SELECTOR, "#detail img")
        wait.until(lambda d: d.execute_script("return arguments[0].naturalWidth", crop) == 256)
        drv.find_element(By.ID, "why").send_keys("closed_eyes")
        body.send_keys("r")
        saved(1)
        assert "reject" in drv.find_element(By.ID, "d-decision").text

        # Rescue the face rejected for its yaw; undo, then keep it again.
        Select(drv.find_element(By.ID, "state")).select_by_value("rejected")
        Select(drv.find_element(By.ID, "reason")).select_by_value("extreme_yaw")
        assert drv.find_element(By.ID, "count").text == "1 of 7 faces"
        drv.find_element(By.ID, "why").clear()
        body.send_keys("o")                                       # the raw image on demand
        raw = drv.find_element(By.ID, "raw")
        wait.until(lambda d: d.execute_script("return arguments[0].naturalWidth", raw) == 640)
        # ... beside the copy ingest set aside as its near-duplicate, and the matte on `m`
        dups = drv.find_elements(By.CSS_SELECTOR, "#dups figure")
        assert [e.text for e in dups] == ["group_copy.jpg (near_duplicate)"]
        dup_img = dups[0].find_element(By.TAG_NAME, "img")
        wait.until(lambda d: d.execute_script("return arguments[0].naturalWidth", dup_img) == 300)
        body.send_keys("m")
        matte = drv.find_element(By.ID, "matte")
        wait.until(lambda d: d.execute_script("return arguments[0].naturalWidth", matte) == 256)
        body.send_keys("m")
        assert not drv.find_elements(By.ID, "matte")
        body.send_keys("a")
        saved(2)
        body.send_keys("u")
        saved(3)
        rows = list(csv.DictReader((demo / "data/review/photo.csv").open()))
        assert [(r["face_index"], r["decision"]) for r in rows] == [(str(ok_i), "reject")]
        assert drv.find_element(By.ID, "pending").get_attribute("data-pending") == "1"
        body.send_keys("a")
        saved(4)
        assert drv.find_element(By.ID, "pending").get_attribute("data-pending") == "2"
        assert not drv.find_element(By.ID, "error").is_displayed()

        # Pages of the grid (?per_page=3: 7 faces -> 3 pages), and a score range, sorted.
        drv.get(url + "?per_page=3")
        wait.until(lambda d: d.find_element(By.ID, "count").text == "7 of 7 faces")
        body = drv.find_element(By.TAG_NAME, "body")
        assert drv.find_element(By.ID, "page").text == "page 1 of 3"
        assert len(drv.find_elements(By.CSS_SELECTOR, "#grid .face")) == 3
        body.send_keys("n")
        assert drv.find_element(By.ID, "page").text == "page 2 of 3"
        assert drv.find_element(By.CSS_SELECTOR, "#grid .face.current").get_attribute("data-n") == "3"
        body.send_keys("j", "j", "j")                            # across the page boundary
        assert drv.find_element(By.ID, "page").text == "page 3 of 3"
        body.send_keys("p")
        assert drv.find_element(By.ID, "page").text == "page 2 of 3"
        blurs = sorted(f["scores"]["blur"] for f in _faces(url)["faces"] if "blur" in f["scores"])
        limit = blurs[len(blurs) // 2]
        Select(drv.find_element(By.ID, "metric")).select_by_value("blur")
        drv.find_element(By.ID, "hi").send_keys(str(limit))
        drv.find_element(By.ID, "sorted").click()
        wanted = sum(b <= limit for b in blurs)
        assert drv.find_element(By.ID, "count").text == f"{wanted} of 7 faces"
        shown = drv.execute_script("return shown.map((f) => f.scores.blur)")  # blurriest first
        assert shown == sorted(shown) and len(shown) == wanted and max(shown) <= limit
    finally:
        drv.quit()

    rows = list(csv.DictReader((demo / "data/review/photo.csv").open()))
    assert [(r["sha256"], r["face_index"], r["decision"], r["reason"]) for r in rows] == [
        (sha, str(ok_i), "reject", "closed_eyes"), (sha, str(yaw_i), "keep", "")][::1 if ok_i < yaw_i else -1]
    assert all(r["when"].endswith("Z") for r in rows)
    listed = _faces(url)
    assert listed["pending"] == 2
    assert {f["raw_path"]: f["dups"] for f in listed["faces"]}["group.jpg"] == [
        {"path": "group_copy.jpg", "reason": "near_duplicate"}]
    for bad, reason in (("dup/photo/0/1", "no_duplicate"), ("dup/photo/999/0", "no_face"),
                        ("matte/photo/999", "no_face"), ("crop/cartoon/0", "no_domain"),
                        ("api/faces?domain=cartoon", "no_domain")):
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(url + bad, timeout=30)
        assert missing.value.code == 404
        assert json.loads(missing.value.read())["reason"] == reason, bad
    # An image rejected as a whole cannot be kept: the page says so and writes nothing.
    coffee = before[("coffee.png", -1)]["sha256"]
    req = urllib.request.Request(f"{url}api/decide", method="POST", headers={"Content-Type": "application/json"},
                                 data=json.dumps({"domain": "photo", "sha256": coffee, "face_index": -1,
                                                  "decision": "keep"}).encode())
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(req, timeout=60)
    assert refused.value.code == 422 and "no face to keep" in json.loads(refused.value.read())["error"]
    assert len(list(csv.DictReader((demo / "data/review/photo.csv").open()))) == 2

    # `toonlab curate` (what `dvc repro curate` / `snakemake -c2 curate` run) applies them.
    cwd = Path.cwd()
    os.chdir(demo)
    try:
        assert main(["curate"]) == 0
    finally:
        os.chdir(cwd)
    curated = {(r["raw_path"], r["face_index"]): r for r in read_rows(demo / "data/curated/photo.parquet")}
    assert ("group.jpg", ok_i) not in curated
    rescued = curated[("group.jpg", yaw_i)]
    assert rescued["auto_reason"] == "extreme_yaw" and rescued["decided_by"] == "human"
    assert curated[("group.jpg", 2)]["decided_by"] == "auto"
    assert len(curated) == 5
    summary = json.loads((demo / "reports/curation/summary.json").read_text())["domains"]["photo"]
    assert summary["review"]["by_decision_reason"] == {"keep": {"(none)": 1}, "reject": {"closed_eyes": 1}}
    assert (summary["review"]["rejected"], summary["review"]["rescued"]) == (1, 1)
    assert summary["faces"]["rejected_by_reason"] == {"human_reject": 1}
    html = (demo / "reports/curation/index.html").read_text()
    assert "Human review (2 decisions" in html and "Faces decided by a human (2)" in html
    # The page now has nothing pending, and shows the new states.
    after = _faces(url)
    assert after["pending"] == 0
    states = {(f["raw_path"], f["face_index"]): (f["state"], f["reason"]) for f in after["faces"]}
    assert states[("group.jpg", ok_i)] == ("rejected", "human_reject") and states[("group.jpg", yaw_i)] == ("kept", "")
    assert proc.poll() is None
    stop(proc)

    # Decisions key on content: the photo under another name, every upstream stage re-run
    # from scratch (caches and outputs gone), and they still apply.
    import toonlab.params as tparams

    work = Path(demo / tparams.load_params(demo / "params.yaml").preprocess.cache_dir)
    for folder in (work, demo / "data/interim", demo / "data/faces", demo / "data/curated"):
        shutil.rmtree(folder, ignore_errors=True)
    (demo / "data/raw/photo/sub").mkdir()
    os.rename(demo / "data/raw/photo/group.jpg", demo / "data/raw/photo/sub/renamed.jpg")
    os.chdir(demo)
    try:
        for stage in ("ingest", "detect", "matte", "align", "curate"):
            assert main([stage]) == 0, stage
    finally:
        os.chdir(cwd)
    again = {(r["raw_path"], r["face_index"]): r for r in read_rows(demo / "data/curated/photo.parquet")}
    assert ("sub/renamed.jpg", ok_i) not in again and again[("sub/renamed.jpg", yaw_i)]["decided_by"] == "human"
    assert len(again) == 5


def test_the_review_files_are_pipeline_inputs():
    """DVC's curate stage and the Snakemake rule read the review files (a dry run of the real
    Snakefile lists them among the curate job's inputs)."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    assert "${curate.review_dir}" in stages["curate"]["deps"]
    dry = subprocess.run([str(Path(sys.executable).parent / "snakemake"), "-n", "--nolock", "curate"], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert dry.returncode == 0, dry.stdout + dry.stderr
    job = (dry.stdout + dry.stderr).split("rule curate:", 1)[1]
    inputs = job.split("input:", 1)[1].split("\n", 1)[0].split(", ")
    assert "data/review/photo.csv" in inputs and "data/review/anime.csv" in inputs
    for domain in ("photo", "anime"):
        assert (REPO / "data/review" / f"{domain}.csv").read_text().startswith("sha256,face_index,decision")


@pytest.mark.slow  # a headless browser: not in `make test-fast`
def test_page_shows_markup_as_text(tmp_path):
    """Markup in every field the page shows (the domain, file names, reasons, details, the
    split, near-duplicates and their reason, a decision's reason, the review file's folder)
    is text: in the page as served, and in what its script draws in a real browser."""
    import hashlib

    import pyarrow as pa
    import uvicorn
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from test_pages_escaping import evil, shown_as_text
    from toonlab.apps.review import Reviewer, create_app
    from toonlab.apps.web import bind, url_of
    from toonlab.data.ingest import COLUMNS, write_manifest
    from toonlab.faces.review_decisions import Decision, write_review
    from toonlab.params import validate_params
    from toonlab.util.tables import write_parquet

    domain = "dom?#%" + evil("domain")     # ?, # and %: the image URLs must encode the domain
    params = validate_params({"data": {"raw_dir": str(tmp_path / "raw")},
                              "ingest": {"out_dir": str(tmp_path / "interim")},
                              "align": {"out_dir": str(tmp_path / "processed")},
                              "curate": {"out_dir": str(tmp_path / "curated"),
                                         "review_dir": str(tmp_path / ("review" + evil("review_dir")))}})
    files = {"kept": f"k{evil('file')}.png", "rejected": f"r{evil('other_file')}.png", "dup": f"d{evil('dup')}.png"}
    shas, ingest = {}, []
    for k, (role, name) in enumerate(files.items()):
        path = tmp_path / "raw" / domain / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((64, 64, 3), 60 * k, np.uint8)).save(path)
        shas[role] = hashlib.sha256(path.read_bytes()).hexdigest()
        row = {c: ("" if kind == "string" else 0) for c, kind in COLUMNS}
        row.update(path=name, domain=domain, sha256=shas[role], status="ok", animated=False, orientation=1)
        if role != "rejected":
            row["dup_group"] = "g1"
        if role == "dup":
            row.update(status="rejected", reason=evil("dup_reason"), duplicate_of=files["kept"])
        ingest.append(row)
    write_manifest(ingest, tmp_path / "interim" / domain)
    face = {"domain": domain, "face_index": 0, "crop_256": "", "crop_128": "", "box": [4.0, 4.0, 40.0, 40.0],
            "score": 0.9, "face_px": 36.0, "yaw": 2.0, "blur": 80.0, "bg_fraction": 0.3}
    kept = {**face, "raw_path": files["kept"], "sha256": shas["kept"], "status": "ok", "reason": "", "detail": ""}
    rejected = {**face, "raw_path": files["rejected"], "sha256": shas["rejected"], "status": "rejected",
                "reason": evil("reason"), "detail": evil("detail")}
    write_parquet(pa.Table.from_pylist([kept, rejected]), tmp_path / "processed" / domain / "manifest.parquet")
    write_parquet(pa.Table.from_pylist([{**kept, "detail": evil("kept_detail"), "split": evil("split")}]),
                  tmp_path / "curated" / f"{domain}.parquet")
    rv = Reviewer(params, [domain])
    write_review(rv.review_path(domain), [Decision(shas["kept"], 0, "reject", evil("decision_reason"))])

    sock = bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(create_app(rv), log_level="warning", access_log=False, ws="none"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    url = url_of(sock)
    drv = _driver()
    try:
        with urllib.request.urlopen(url, timeout=60) as r:
            shown_as_text(r.read().decode(), ["domain"], scripts=1)
        # An injected handler would call alert(field): record the calls instead of opening dialogs.
        drv.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {
            "source": "window.ran = []; window.alert = (m) => window.ran.push(String(m));"})
        drv.get(url)
        WebDriverWait(drv, 60).until(lambda d: d.find_element(By.ID, "count").text == "2 of 2 faces")
        body = drv.find_element(By.TAG_NAME, "body")
        body.send_keys("o")                                   # the raw image and the near-duplicates too
        texts = [drv.find_element(By.ID, "grid").text, drv.find_element(By.ID, "file").text]
        for _ in range(2):
            texts.append(drv.find_element(By.ID, "detail").text)
            assert drv.execute_script("return document.querySelectorAll('[onerror]').length") == 0
            body.send_keys("j")
        reasons = [o.get_attribute("value") for o in drv.find_elements(By.CSS_SELECTOR, "#reason option")]
        assert reasons == ["", evil("reason")]
        assert drv.execute_script("return document.querySelectorAll('img[src=\"x\"], [onerror]').length") == 0
        WebDriverWait(drv, 30).until(lambda d: d.execute_script(
            "return [...document.querySelectorAll('#detail img')].every((i) => i.complete)"))
        widths = drv.execute_script("return [...document.querySelectorAll('#detail img')].map((i) => i.naturalWidth)")
        assert widths and widths[0] > 0, f"the raw image did not load (its URL must encode the domain): {widths}"
        assert drv.execute_script("return window.ran") == []
    finally:
        drv.quit()
        server.should_exit = True
        thread.join(30)
        sock.close()
    shown = "\n".join(texts)
    missing = [f for f in ("file", "other_file", "dup", "dup_reason", "reason", "detail", "kept_detail", "split",
                           "decision_reason", "review_dir") if evil(f) not in shown]
    assert missing == []
