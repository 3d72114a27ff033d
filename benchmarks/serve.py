"""`toonlab serve` memory and overload: the server's RSS idle and its peak under 20
concurrent uploads, and how many of them the upload cap refuses (503).

    python benchmarks/serve.py [--uploads 20] [--image-px 2048] [--ngf 32] [--blocks 6]
                               [--cap N ...] [--max-loaded-mb MB]

`toonlab serve` runs as a real subprocess on a free loopback port (`--port 0`) with one
CycleGAN run written from freshly initialised weights (nothing is trained). The upload
is skimage's astronaut upscaled to --image-px, saved as JPEG. After one warm-up upload
(the run and the face detector loaded), the idle RSS is read from /proc/<pid>/status;
the peak (VmHWM) is reset (/proc/<pid>/clear_refs, else RSS is sampled every 20 ms) and
--uploads clients post the photo at once. One row per `serve.max_concurrent_uploads`
value (--cap, repeatable; "default": the params default, which leaves it out of the
params file so an older server runs too). Ratios are against the first row.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from common import follow, multipart, random_cyclegan_run, url_in


def _photo(image_px: int) -> bytes:
    from PIL import Image
    from skimage import data

    buf = io.BytesIO()
    Image.fromarray(data.astronaut()).resize((image_px, image_px), Image.BICUBIC).save(buf, "JPEG", quality=95)
    return buf.getvalue()


def _post(url: str, body: bytes, ctype: str) -> tuple[int, str]:
    req = urllib.request.Request(url + "api/cartoonize", data=body, method="POST", headers={"Content-Type": ctype})
    try:
        with urllib.request.urlopen(req, timeout=600) as r:
            r.read()
            return r.status, ""
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            reason = json.loads(raw).get("reason", "")
        except ValueError:
            reason = raw[:40].decode("latin-1")
        return e.code, f"{reason} retry-after={e.headers.get('Retry-After')}"
    except OSError as e:       # a refused upload whose connection was reset before the answer was read
        return 0, f"{type(e).__name__}: {getattr(e, 'reason', e)}"


def _status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def _reset_peak(pid: int) -> bool:
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _start(root: Path, cap: str, max_loaded_mb: float | None) -> tuple[subprocess.Popen, str]:
    import yaml

    serve: dict = {}
    if cap != "default":
        serve["max_concurrent_uploads"] = int(cap)
    if max_loaded_mb is not None:
        serve["max_loaded_mb"] = max_loaded_mb
    params = root / f"serve-{cap}.yaml"
    params.write_text(yaml.safe_dump({"runtime": {"device": "cpu"}, "train": {"out_dir": str(root / "models")},
                                      "serve": serve}))
    env = {**os.environ, "TOONLAB_PROGRESS": "0", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "toonlab", "serve", "--params", str(params), "--port", "0",
                             "--run", "cyclegan"], cwd=root, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    ready, lines = follow(proc, "serving")
    if not ready.wait(300) or proc.poll() is not None:
        proc.kill()
        raise SystemExit("toonlab serve did not start:\n" + "".join(lines))
    url = url_in(lines, "serving")
    return proc, url


def measure(root: Path, cap: str, photo: bytes, uploads: int, max_loaded_mb: float | None) -> dict:
    proc, url = _start(root, cap, max_loaded_mb)
    try:
        body, ctype = multipart({"run": "cyclegan", "faces": "largest", "paste_back": "1"},
                                {"photo": ("photo.jpg", photo)})
        status, why = _post(url, body, ctype)
        if status != 200:
            raise SystemExit(f"the warm-up upload was answered {status} {why}")
        time.sleep(1.0)
        idle_kb = _status_kb(proc.pid, "VmRSS")
        exact = _reset_peak(proc.pid)
        sampled = [idle_kb]
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(0.02):
                try:
                    sampled.append(_status_kb(proc.pid, "VmRSS"))
                except (OSError, KeyError):
                    return

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        results: list[tuple[int, str]] = []
        go = threading.Barrier(uploads)

        def client() -> None:
            go.wait()
            results.append(_post(url, body, ctype))

        t0 = time.perf_counter()
        threads = [threading.Thread(target=client) for _ in range(uploads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        stop.set()
        sampler.join()
        peak_kb = _status_kb(proc.pid, "VmHWM") if exact else max(sampled)
        codes = sorted({s for s, _ in results})
        return {"cap": cap, "idle_mb": idle_kb / 1024, "peak_mb": peak_kb / 1024, "peak_exact": exact,
                "ok": sum(s == 200 for s, _ in results), "busy": sum(s == 503 for s, _ in results),
                "other": [f"{s} {w}" for s, w in results if s not in (200, 503)], "codes": codes, "wall_s": wall,
                "retry_after": next((w.split("retry-after=")[1] for s, w in results if s == 503), "-"),
                "alive": proc.poll() is None}
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--uploads", type=int, default=20, help="concurrent uploads")
    ap.add_argument("--image-px", type=int, default=2048, help="side of the uploaded JPEG")
    ap.add_argument("--ngf", type=int, default=32)
    ap.add_argument("--blocks", type=int, default=6)
    ap.add_argument("--cap", action="append", default=None,
                    help="serve.max_concurrent_uploads per row ('default' or a number; default: default and "
                         "the number of uploads)")
    ap.add_argument("--max-loaded-mb", type=float, default=None, help="serve.max_loaded_mb (default: params default)")
    args = ap.parse_args()
    caps = args.cap or ["default", str(args.uploads)]

    photo = _photo(args.image_px)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        random_cyclegan_run(root / "models" / "cyclegan", args.ngf, args.blocks)
        for cap in caps:
            rows.append(measure(root, cap, photo, args.uploads, args.max_loaded_mb))

    print(f"toonlab serve, {args.uploads} concurrent uploads of a {args.image_px}x{args.image_px} JPEG "
          f"({len(photo) / 2**20:.1f} MB), CycleGAN ngf {args.ngf} {args.blocks} blocks, CPU "
          f"({os.cpu_count()} cores); RSS in MiB ({'VmHWM' if rows[0]['peak_exact'] else 'sampled'} for the peak)")
    print(f"{'cap':<9}{'idle MiB':>10}{'peak MiB':>10}{'peak-idle':>11}{'peak/row1':>11}{'200':>6}{'503':>6}"
          f"{'other':>7}{'Retry-After':>13}{'wall s':>9}  server")
    base = rows[0]["peak_mb"]
    for r in rows:
        print(f"{r['cap']:<9}{r['idle_mb']:>10.0f}{r['peak_mb']:>10.0f}{r['peak_mb'] - r['idle_mb']:>11.0f}"
              f"{r['peak_mb'] / base:>11.2f}{r['ok']:>6}{r['busy']:>6}{len(r['other']):>7}{r['retry_after']:>13}"
              f"{r['wall_s']:>9.1f}  {'alive' if r['alive'] else 'DIED'}")
    for r in rows:
        if r["other"]:
            print(f"cap {r['cap']}: other answers: {', '.join(r['other'][:5])}")


if __name__ == "__main__":
    main()
