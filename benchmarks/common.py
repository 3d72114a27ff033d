"""What several benchmarks share: a CycleGAN run with random weights (a stand-in for a
trained one: same shapes, same cost), a multipart upload body, and a server subprocess
whose output is followed until it prints its URL. Imported as a sibling module (the
benchmarks run as scripts, their folder is on sys.path); the tests' web servers
(tests/servers.py) use the last two too."""

from __future__ import annotations

import io
import subprocess
import threading
import uuid
from pathlib import Path


def random_cyclegan_run(run_dir: Path, ngf: int, blocks: int, px: int = 256) -> Path:
    """A CycleGAN run folder (checkpoint step 0) with random generators of the given size."""
    import torch

    from toonlab.models.common import init_weights
    from toonlab.models.cyclegan.model import ResnetGenerator
    from toonlab.models.cyclegan.params import CycleGANParams
    from toonlab.train import checkpoint as ckpt

    params = CycleGANParams.model_validate({"model": {"ngf": ngf, "n_blocks": blocks}, "data": {"crop_px": px}})
    torch.manual_seed(0)
    nets = {}
    for name in ("G_A", "G_B"):
        g = ResnetGenerator(ngf=ngf, n_blocks=blocks)
        init_weights(g)
        nets[name] = g.state_dict()
    ckpt.save(run_dir / "checkpoints" / "step-00000000.pt",
              {"family": "cyclegan", "step": 0, "config": {"params": params.model_dump(mode="json")}, "nets": nets})
    return run_dir


def multipart(fields: dict[str, str], files: dict[str, tuple[str, bytes]]) -> tuple[bytes, str]:
    """A multipart/form-data body and its Content-Type."""
    boundary = uuid.uuid4().hex
    out = io.BytesIO()
    for k, v in fields.items():
        out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode())
    for k, (name, data) in files.items():
        out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"; filename="{name}"\r\n'
                  "Content-Type: application/octet-stream\r\n\r\n".encode())
        out.write(data + b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue(), f"multipart/form-data; boundary={boundary}"


def follow(proc: subprocess.Popen, marker: str) -> tuple[threading.Event, list[str]]:
    """Collect the process's output lines in a thread; the event is set at the first line
    holding `marker` (or when the output ends)."""
    lines: list[str] = []
    ready = threading.Event()

    def pump() -> None:
        for line in proc.stdout:
            lines.append(line)
            if marker in line:
                ready.set()
        ready.set()

    threading.Thread(target=pump, daemon=True).start()
    return ready, lines


def url_in(lines: list[str], marker: str) -> str | None:
    """The first http:// word of the first line holding `marker`."""
    return next((w for ln in lines if marker in ln for w in ln.split() if w.startswith("http://")), None)
