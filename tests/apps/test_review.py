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


def _start(root: Path):
    proc = subprocess.Popen([sys.executable, "-m", "toonlab", "review", "--port", "0"], cwd=root,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    ready = threading.Event()

    def pump():
        for line in proc.stdout:
            lines.append(line)
            if "http://" in line:
                ready.set()

    threading.Thread(target=pump, daemon=True).start()
    if not ready.wait(120):
        proc.kill()
        pytest.fail("toonlab review did not start:\n" + "".join(lines))
    url = next(w for w in lines[-1].split() if w.startswith("http://"))
    return proc, url


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
    proc, url = _start(demo)
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
    proc.terminate()
    proc.wait(30)

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
