"""Start-up cost of the command line: wall time and peak memory (max RSS) of `toonlab
--help` and `toonlab params` against a bare `python -c pass`, and, for scale, of
importing torch, measured as child processes in this run (median of --repeat runs).

The configuration layer (`toonlab.params`, `toonlab.cli`, the Snakefile's glue) imports
no torch and no OpenCV, so `--help` costs a few times a bare interpreter, not a torch
import (before the registry redesign: about 2.7-3.2 s and 1,000 MB here).

    python benchmarks/cli_startup.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time


def measure(cmd: list[str], cwd: str, repeat: int) -> tuple[float, float]:
    """(median wall seconds, median peak RSS in MB) of `cmd` run `repeat` times."""
    walls, rss = [], []
    for _ in range(repeat):
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        walls.append(time.perf_counter() - t0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode}")
        rss.append(usage.ru_maxrss / 1024)   # kB on Linux
    return statistics.median(walls), statistics.median(rss)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    py = sys.executable
    with tempfile.TemporaryDirectory() as cwd:
        open(os.path.join(cwd, "params.yaml"), "w").write("{}\n")
        cases = [("python -c pass", [py, "-c", "pass"]),
                 ("toonlab --help", [py, "-m", "toonlab", "--help"]),
                 ("toonlab params", [py, "-m", "toonlab", "params"]),
                 ("python -c 'import torch'", [py, "-c", "import torch"])]
        results = {name: measure(cmd, cwd, args.repeat) for name, cmd in cases}
    base_t, base_m = results["python -c pass"]
    print(f"{'command':<28} {'wall s':>8} {'x base':>8} {'peak MB':>9} {'x base':>8}")
    for name, (t, m) in results.items():
        print(f"{name:<28} {t:8.3f} {t / base_t:8.1f} {m:9.1f} {m / base_m:8.1f}")


if __name__ == "__main__":
    main()
