import contextlib
import http.server
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

# The drivers (toonlab, snakemake, dvc) are the ones installed next to this interpreter.
os.environ["PATH"] = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"
os.environ.setdefault("TOONLAB_PROGRESS", "0")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ["DVC_NO_ANALYTICS"] = "1"
# The suite runs as on a CPU without native bf16: `train.cpu_precision: auto` falls back to
# fp32 without its timing probe, so that training tests are exact and repeatable. Tests of
# bf16 set it explicitly; tests/train/test_precision.py tests `auto` itself (probe included).
os.environ["TOONLAB_CPU_BF16"] = "0"


# The longest end-to-end tests start first, on different workers. `make test` runs
# pytest-xdist with --dist worksteal: worker i first gets the i-th contiguous share of the
# collection (so module fixtures are mostly built once), and an idle worker steals from
# the end of a busy one's queue. The first long test heads the first share, the others
# head the second, and the rest keeps its order.
LONGEST_FIRST = (
    "tests/test_drivers.py::test_dvc_first_then_snakemake_has_nothing_to_do",
    "tests/test_slurm.py::test_readme_cluster_example_on_a_real_slurm_equals_a_local_run",
    "tests/test_drivers.py::test_snakemake_first_then_dvc_does_no_work",
)


def pytest_collection_modifyitems(config, items):
    long = [it for name in LONGEST_FIRST for it in items if it.nodeid == name]
    rest = [it for it in items if it not in long]
    workers = getattr(config, "workerinput", {}).get("workercount", 1)
    if workers < 2 or len(long) < 2:
        items[:] = long + rest
        return
    first_share = len(items) // workers
    items[:] = long[:1] + rest[:first_share - 1] + long[1:] + rest[first_share - 1:]


def run(cmd: list[str], cwd: Path, check: bool = True, timeout: float = 600,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}")
    return proc


@contextlib.contextmanager
def file_server(files: dict[str, bytes], content_type: str):
    """A real HTTP server on 127.0.0.1 answering GET <path> with files[path] (404
    otherwise): yields (base URL, the paths requested, in order)."""
    hits: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            hits.append(self.path)
            body = files.get(self.path)
            if body is None:
                self.send_response(404)
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", hits
    finally:
        httpd.shutdown()
        httpd.server_close()


def project_files() -> list[str]:
    """The files a fresh clone would have: tracked plus untracked-but-not-ignored."""
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout.split("\n")
    return [f for f in out if f and (REPO / f).is_file()]


@pytest.fixture
def project(tmp_path: Path):
    """A fresh copy of the project (its own git repo), to run the real drivers in."""
    dest = tmp_path / "proj"
    for rel in project_files():
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, target)
    run(["git", "init", "-q"], dest)
    run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "add", "-A"], dest)
    run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "copy"], dest)
    return dest


# ----------------------------------------------------------------------------- torch threads


def _torch_threads(n: int):
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors on shared cores: one intra-op thread is fastest and steadiest. A module
    uses it with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    yield from _torch_threads(1)


@pytest.fixture(scope="module")
def two_threads():
    yield from _torch_threads(2)


# ----------------------------------------------------------------------------- known-transform images


def blobs(rng, n, px, transform=None):
    """The known-transform task's dark images: n smooth px x px x 3 images in [0, 0.5],
    each passed through `transform` when given."""
    out = []
    for _ in range(n):
        small = rng.uniform(0, 0.5, (4, 4, 3))  # dark images
        img = np.asarray(Image.fromarray((small * 255).astype(np.uint8)).resize((px, px), Image.BICUBIC)) / 255.0
        out.append(transform(img) if transform else img)
    return out


def invert(img):
    return 1.0 - img


def write_folder(folder: Path, images):
    folder.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(images):
        Image.fromarray((np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)).save(folder / f"{i:03d}.png")


# ----------------------------------------------------------------------------- packed data


def write_packed(root: Path, domain: str, rgb: np.ndarray, five: np.ndarray,
                 splits=("train", "val", "test")) -> Path:
    """A packed dataset of `domain` under root (the `toonlab pack` array layout): the same
    N x px x px x 3 images and N x 5 x 2 landmarks in each split, opaque alpha."""
    from toonlab.faces.pack import array_name

    px = rgb.shape[1]
    folder = root / domain
    folder.mkdir(parents=True, exist_ok=True)
    for split in splits:
        np.save(folder / array_name(split, px, "rgb"), rgb)
        np.save(folder / array_name(split, px, "alpha"), np.full(rgb.shape[:3], 255, np.uint8))
        np.save(folder / array_name(split, px, "five"), np.asarray(five, np.float32))
    return folder


# ----------------------------------------------------------------------------- trained-looking runs


def jitter_state(net: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """A state dict with every float tensor randomised (trained-looking, not init values);
    U-GAT-IT's rho (AdaLIN / soft-AdaLIN mixing) kept in [0, 1]."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for k, v in net.state_dict().items():
        if v.is_floating_point():
            if k.endswith("rho"):
                v = torch.rand(v.shape, generator=gen)
            else:
                v = v + 0.05 * torch.randn(v.shape, generator=gen)
        state[k] = v
    return state


def write_run(root: Path, run: str, family: str, params, nets: dict[str, torch.nn.Module]) -> Path:
    """A run folder root/run with one step-1 checkpoint of `family` (jittered weights)."""
    from toonlab.train import checkpoint as ckpt

    run_dir = root / run
    state = {"family": family, "step": 1, "config": {"params": params.model_dump(mode="json")},
             "nets": {k: jitter_state(v, i) for i, (k, v) in enumerate(nets.items())}}
    ckpt.save(run_dir / "checkpoints" / "step-00000001.pt", state)
    return run_dir


# ----------------------------------------------------------------------------- stand-in families


def register_family(monkeypatch, name: str, params_cls, inference=None, *, kind: str = "translation",
                    build=None, domains=("photo",)):
    """Register a stand-in model family for one test (the registry gains one entry, as a
    new family's would): its 'model module' is a namespace with `build` / `inference`."""
    from types import SimpleNamespace

    from toonlab.models import registry

    fam = registry.Family(name, params=params_cls, model=SimpleNamespace(build=build, inference=inference,
                                                                        __name__=f"tests.{name}"),
                          steps=lambda p: 1, domains=lambda p: list(domains), kind=kind)
    monkeypatch.setattr(registry, "FAMILIES", (*registry.FAMILIES, fam))
    return fam


# ----------------------------------------------------------------------------- trainer runs


@pytest.fixture
def workdir(tmp_path):
    """Two folders of generated images, A and its known transform B, for tiny trainings."""
    rng = np.random.default_rng(0)
    write_folder(tmp_path / "A", blobs(rng, 24, 40))
    write_folder(tmp_path / "B", blobs(rng, 24, 40, invert))
    return tmp_path
