import contextlib
import http.server
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

# Each pytest-xdist worker gets its share of the cores, and so does every process it starts
# (toonlab, dvc, snakemake and their jobs inherit the environment). Without this, each of
# the two workers ran torch, oneDNN and OpenCV with one thread per core, and a test ran 3-4x
# slower in the suite than alone: four busy threads (more while a subprocess trained) on two
# cores, each OpenMP thread spinning while it waited for the others. Set before torch (and
# numpy's BLAS) start their thread pools.
WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 1)
THREADS = max(1, len(os.sched_getaffinity(0)) // WORKERS)
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OPENCV_FOR_THREADS_NUM"):
    os.environ[_var] = str(THREADS)

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

torch.set_num_threads(THREADS)

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

# The drivers (toonlab, snakemake, dvc) are the ones installed next to this interpreter.
os.environ["PATH"] = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"
os.environ.setdefault("TOONLAB_PROGRESS", "0")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("TOONLAB_FETCH_WEIGHTS", "never")  # the suite never downloads; test_weights.py opts in
# Loopback test servers are reached directly, whatever proxy the machine running the suite uses
# (the crawler and `weights fetch` honour *_PROXY; their proxy tests set their own).
for _var in [v for v in os.environ if v.lower() in ("http_proxy", "https_proxy", "all_proxy", "no_proxy")]:
    del os.environ[_var]
os.environ["DVC_NO_ANALYTICS"] = "1"
# Whether this CPU computes bf16 natively (AMX / AVX512-BF16) or emulates it (AMD EPYC here),
# asked before the line below hides it. bf16 learning tests run at full length only where it
# is native; elsewhere they check the emulated bf16 arithmetic at the smallest size that
# shows it (`bf16_twin`, `assert_bf16_tracks_fp32`).
from toonlab.train.precision import native_bf16  # noqa: E402

NATIVE_BF16, NATIVE_BF16_WHY = native_bf16()
# The suite runs as on a CPU without native bf16: `train.cpu_precision: auto` falls back to
# fp32 without its timing probe, so that training tests are exact and repeatable. Tests of
# bf16 set it explicitly; tests/train/test_precision.py tests `auto` itself (probe included).
os.environ["TOONLAB_CPU_BF16"] = "0"

# ----------------------------------------------------------------------------- the time budget

# `make test` on this project's 2-core machine kind (README, "Tests"). Going over it is a
# warning at the end of the run, never a failure: machines differ.
# `make test-fast` (`-m "not slow"`, the inner loop) has its own.
BUDGET_S = {"": 600, "not slow": 180}
_STARTED = time.monotonic()


def cpu_kind() -> str:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), "unknown CPU") if Path("/proc/cpuinfo").exists() else "unknown CPU"
    bf16 = "native bf16" if NATIVE_BF16 else f"no native bf16: {NATIVE_BF16_WHY}"
    return f"{model}, {len(os.sched_getaffinity(0))} cores, {bf16}"


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if hasattr(config, "workerinput") or config.option.collectonly:
        return
    wall = time.monotonic() - _STARTED
    tr = terminalreporter
    tr.section("time budget")
    # Only the whole suite (or the fast set) has a budget, not a chosen file or test.
    whole = config.args_source == pytest.Config.ArgsSource.TESTPATHS and not config.getoption("keyword")
    budget = BUDGET_S.get(config.getoption("markexpr") or "") if whole else None
    of = f"of a {budget} s budget " if budget else ""
    workers = config.getoption("numprocesses", None) or 1
    threads = max(1, len(os.sched_getaffinity(0)) // workers)
    tr.write_line(f"wall time {wall:.0f} s {of}({cpu_kind()}; {workers} worker{'s' * (workers > 1)}, "
                  f"{threads} thread{'s' * (threads > 1)} each)")
    if budget and wall > budget:
        tr.write_line(f"WARNING: {wall - budget:.0f} s over the budget: the slowest durations are listed above; "
                      "make them leaner before adding more", yellow=True, bold=True)


# The longest end-to-end tests start first, on different workers. `make test` runs
# pytest-xdist with --dist worksteal: worker i first gets the i-th contiguous share of the
# collection (so module fixtures are mostly built once), and an idle worker steals from
# the end of a busy one's queue. The first worker starts with the shared build (the
# `built` fixture) and the tests that read it; the second with the Slurm test, whose
# cluster run needs no build (it compares with the build afterwards), then the longest
# test on a copy of the build. The rest keeps its order.
LONGEST_FIRST = (
    ("tests/test_drivers.py::test_dvc_first_then_snakemake_has_nothing_to_do",
     "tests/test_drivers.py::test_snakemake_first_then_dvc_does_no_work",
     "tests/test_drivers.py::test_code_dependencies_under_both_drivers"),
    ("tests/test_slurm.py::test_readme_cluster_example_on_a_real_slurm_equals_a_local_run",
     "tests/test_drivers.py::test_remote_fresh_clone_and_experiments"),
)


def pytest_collection_modifyitems(config, items):
    heads = [[it for name in names for it in items if it.nodeid == name] for names in LONGEST_FIRST]
    chosen = [it for head in heads for it in head]
    rest = [it for it in items if it not in chosen]
    workers = getattr(config, "workerinput", {}).get("workercount", 1)
    if workers < 2 or not all(heads):
        items[:] = chosen + rest
        return
    first_share = len(items) // workers
    cut = max(0, first_share - len(heads[0]))
    items[:] = heads[0] + rest[:cut] + heads[1] + rest[cut:]


# With TOONLAB_TEST_RUN_LOG=<file>, every command `run` runs appends a line there: its
# seconds, the test, the command (where an end-to-end test spends its time).
RUN_LOG = os.environ.get("TOONLAB_TEST_RUN_LOG")


def run(cmd: list[str], cwd: Path, check: bool = True, timeout: float = 600,
        env: dict[str, str] | None = None, merged: bool = False) -> subprocess.CompletedProcess:
    """Run a command, raising with its output when it fails; `merged`: stderr into stdout,
    in order (so that what each DVC stage's command printed stays under its heading)."""
    t0 = time.monotonic()
    proc = subprocess.run(cmd, cwd=cwd, stdout=subprocess.PIPE, text=True, timeout=timeout, env=env,
                          stderr=subprocess.STDOUT if merged else subprocess.PIPE)
    if RUN_LOG:
        test = os.environ.get("PYTEST_CURRENT_TEST", "").split(" ")[0]
        with open(RUN_LOG, "a") as f:
            f.write(f"{time.monotonic() - t0:7.1f}\t{test}\t{' '.join(cmd)[:200]}\n")
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{'(merged into stdout)' if merged else proc.stderr}")
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


def copy_project(dest: Path) -> Path:
    """A fresh copy of the project at dest (its own git repo, one commit)."""
    for rel in project_files():
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, target)
    run(["git", "init", "-q"], dest)
    run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "add", "-A"], dest)
    run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "copy"], dest)
    return dest


@pytest.fixture
def project(tmp_path: Path):
    """A fresh copy of the project (its own git repo), to run the real drivers in."""
    return copy_project(tmp_path / "proj")


@pytest.fixture(scope="session")
def built(tmp_path_factory, request):
    """The tiny project built once for the whole run by both drivers (tests/tiny_project.py),
    shared by the xdist workers: the first to ask builds it under a file lock, the other
    waits and reads its record. Read-only: a test that changes it takes `built_copy`. A
    failed build fails every test that needs it with the build's own error."""
    from filelock import FileLock

    from tiny_project import Built, build

    base = tmp_path_factory.getbasetemp()
    shared = base.parent if hasattr(request.config, "workerinput") else base  # the workers' common folder
    record, failed = shared / "built.json", shared / "built.failed"
    with FileLock(str(shared / "built.lock")):
        if failed.exists():
            pytest.fail(f"the shared tiny project failed to build (on another worker):\n{failed.read_text()}")
        if record.exists():
            return Built.load(record)
        try:
            result = build(shared / "built", copy_project)
        except BaseException as e:
            failed.write_text(f"{type(e).__name__}: {e}")
            raise
        result.save(record)
        return result


@pytest.fixture
def built_copy(built, tmp_path: Path) -> Path:
    """A copy of the shared build, for a test that changes it."""
    from tiny_project import copy_built

    return copy_built(built, tmp_path / "proj")


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

    from toonlab import registry

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


# ----------------------------------------------------------------------------- bf16 learning tests

# On a CPU that emulates bf16, a learning test's bf16 case trains its own settings for this
# many steps in fp32 and in bf16 (the same seed and data) instead of its full length.
BF16_TWIN_STEPS = 3


def logged_losses(run_dir: Path) -> dict[str, list[float]]:
    """The losses a run logged through DVCLive (train/<name>.tsv; learning rates, step time
    and images/s left out), each as its values by logged step."""
    folder = run_dir / "dvclive" / "plots" / "metrics" / "train"
    return {p.stem: [float(line.split("\t")[1]) for line in p.read_text().splitlines()[1:]]
            for p in sorted(folder.glob("*.tsv")) if p.stem not in ("step_time_s", "images_per_s")}


def assert_bf16_tracks_fp32(fp32: dict[str, list[float]], bf16: dict[str, list[float]],
                            rel: float = 0.10, floor: float = 0.05) -> None:
    """Step by step, every loss of the bf16 run is within `rel` of the fp32 run's (relative to
    |fp32| + floor: tests/train/test_precision.py's bar, whose worst measured case is 3.5%),
    and bf16 did compute something else (autocast was in effect)."""
    assert fp32 and fp32.keys() == bf16.keys(), (sorted(fp32), sorted(bf16))
    differs = False
    for name, a_series in fp32.items():
        b_series = bf16[name]
        assert len(a_series) == len(b_series) > 0, (name, a_series, b_series)
        for step, (a, b) in enumerate(zip(a_series, b_series)):
            assert abs(b - a) <= rel * (abs(a) + floor), (name, step, a, b)
            differs |= a != b
    assert differs, "the bf16 run computed exactly what fp32 did: autocast was not in effect"


def bf16_twin(train: Callable[[str, Path], Path | list[Path]], root: Path) -> None:
    """The bf16 case of a learning test on a CPU without native bf16 (where its full length
    costs several times the fp32 one): `train(precision, out)` trains the test's own settings
    for BF16_TWIN_STEPS steps, logging every step, into folders under `out`, and returns the
    run folder (or folders, in order); the bf16 runs must track the fp32 ones. The learning
    itself is the fp32 case's, and the full bf16 length runs where bf16 is native."""
    losses = {}
    for precision in ("fp32", "bf16"):
        runs = train(precision, root / f"twin-{precision}")
        losses[precision] = {f"{run.name}/{k}": v for run in ([runs] if isinstance(runs, Path) else runs)
                             for k, v in logged_losses(run).items()}
    assert_bf16_tracks_fp32(losses["fp32"], losses["bf16"])


def smoke_cases(*kinds: str) -> dict[str, tuple[str, dict]]:
    """Test cases of every registered family (of `kinds`, default all) at its smoke settings
    (`toonlab.presets.smoke`), plus the variants a family declares among them: case name ->
    (family name, raw values of its section). Iterates the registry: a new family is covered."""
    from toonlab import presets, registry

    cases = {}
    for fam in registry.FAMILIES:
        if kinds and fam.kind not in kinds:
            continue
        cases[fam.name] = (fam.name, presets.smoke(fam))
        module = fam.part("presets")
        for variant, values in getattr(module, "SMOKE_VARIANTS", {}).get(fam.name, {}).items():
            cases[variant] = (fam.name, values)
    return cases
