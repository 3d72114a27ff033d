"""Which OpenCV build provides `cv2`.

Three wheels ship the same `cv2` package (opencv-python, opencv-python-headless,
opencv-contrib-python; ToonLab's dependencies ask for all three). Installed together they
overwrite each other's files and the last one wins; the GUI builds link libGL, which
containers and cluster nodes often lack. ToonLab wants exactly one, the headless build
(`make install` arranges it; README, "Install"). `toonlab doctor` prints this; `python -m
toonlab.util.opencv` exits 1 when the environment is not so.
"""

from __future__ import annotations

import importlib.metadata
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

WANTED = "opencv-python-headless"
BUILDS = ("opencv-python", "opencv-python-headless", "opencv-contrib-python", "opencv-contrib-python-headless")


@dataclass
class OpenCVState:
    owners: list[str]              # "name version" of every distribution with cv2/__init__.py
    extension: Path | None         # cv2's compiled module
    gl_libraries: list[str] | None  # libGL/libGLX/... it needs (None: could not tell)

    def problems(self) -> list[str]:
        out = []
        if len(self.owners) != 1:
            out.append(f"{len(self.owners)} distributions provide cv2 ({', '.join(self.owners) or 'none'}); "
                       f"want {WANTED} alone")
        elif not self.owners[0].startswith(WANTED + " "):
            out.append(f"cv2 comes from {self.owners[0]}; want {WANTED}")
        if self.gl_libraries:
            out.append(f"cv2 links {', '.join(self.gl_libraries)} (a GUI build): it fails where libGL is missing")
        return out

    def line(self) -> str:
        who = ", ".join(self.owners) or "not installed"
        gl = ("links no libGL" if self.gl_libraries == [] else
              "libGL use unknown (no ldd)" if self.gl_libraries is None else "links " + ", ".join(self.gl_libraries))
        return f"OpenCV (cv2): {who}; {gl}"


def cv2_owners() -> tuple[list[str], Path | None]:
    owners, extension = [], None
    for dist in importlib.metadata.distributions():
        name = (dist.metadata["Name"] or "").lower()
        if name not in BUILDS:
            continue
        files = dist.files or []
        if any(str(f).replace("\\", "/") == "cv2/__init__.py" for f in files):
            owners.append(f"{name} {dist.version}")
            for f in files:
                s = str(f).replace("\\", "/")
                if s.startswith("cv2/cv2") and (s.endswith(".so") or s.endswith(".pyd")):
                    path = Path(dist.locate_file(f))
                    if path.is_file():
                        extension = path
    return sorted(owners), extension


def gl_libraries(extension: Path) -> list[str] | None:
    """The GL libraries the module needs, directly or through its bundled libraries (ldd)."""
    ldd = shutil.which("ldd")
    if ldd is None or sys.platform != "linux":
        return None
    out = subprocess.run([ldd, str(extension)], capture_output=True, text=True).stdout
    return sorted({line.split()[0] for line in out.splitlines() if line.strip().startswith(("libGL", "libEGL"))})


def state() -> OpenCVState:
    owners, extension = cv2_owners()
    return OpenCVState(owners, extension, gl_libraries(extension) if extension else [])


def main() -> int:
    s = state()
    print(s.line())
    for problem in s.problems():
        print(f"  problem: {problem}", file=sys.stderr)
    if s.problems():
        print(f"  fix: pip uninstall -y {' '.join(BUILDS)} && pip install --no-deps {WANTED}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
