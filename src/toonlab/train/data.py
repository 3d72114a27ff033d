"""Training data: packed face crops (or any folder of images), unpaired sampling,
augmentation in worker processes, and a sampler whose position is checkpointed.

The workers deliver uint8 crops (N x 3 x H x W): a quarter of float32's bytes to collate,
pin (on CUDA) and copy, asynchronously (`non_blocking`); `to_device` converts them to
float in [-1, 1] on the device (x / 127.5 - 1, the same arithmetic as
`toonlab.util.codec.from_uint8`). Resizing, cropping, flipping and colour jitter stay in
the workers, on uint8 (albumentations / OpenCV). One loader serves the whole run: its
sampler runs on from epoch to epoch, so the workers are started once and keep
`prefetch` tasks each ready ahead of the step (a task: a chunk of whole batches).

Determinism: the order of samples comes from a generator seeded with (seed, epoch),
and the augmentation of a sample from (seed, epoch, position, key), never from worker
state, so a run gives the same batches whatever the number of workers, and a resumed
run continues exactly where it stopped.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, get_worker_info

from toonlab.errors import UsageError
from toonlab.train.recipe import DataSpec
from toonlab.util.signals import stops_blocked

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}


class ImageSource:
    """Images of one domain: memory-mapped packed arrays (with the matte, `alpha`), or a
    folder of image files (no matte)."""

    def __init__(self, rgb, five=None, files: list[Path] | None = None, alpha=None):
        self.rgb, self.five, self.files, self.alpha = rgb, five, files, alpha

    @classmethod
    def packed(cls, packed_dir: str | Path, domain: str, split: str, px: int) -> "ImageSource":
        from toonlab.faces.pack import load_split

        try:
            arrays = load_split(packed_dir, domain, split, px)
        except (FileNotFoundError, OSError) as exc:
            raise UsageError(f"no packed {domain} {split} data at {px} px in {packed_dir} ({exc}); "
                             "run `dvc repro pack` (or `snakemake -c2 preprocess`) first") from None
        if len(arrays["rgb"]) == 0:
            raise UsageError(f"the packed {domain} {split} split at {px} px is empty")
        return cls(arrays["rgb"], arrays["five"], alpha=arrays.get("alpha"))

    @classmethod
    def folder(cls, folder: str | Path) -> "ImageSource":
        files = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise UsageError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) under {folder}")
        return cls(None, None, files)

    def __len__(self) -> int:
        return len(self.files) if self.files is not None else len(self.rgb)

    def get(self, i: int) -> tuple[np.ndarray, np.ndarray | None]:
        if self.files is not None:
            from toonlab.data.decode import decode_file
            from toonlab.data.params import DecodeParams

            res = decode_file(self.files[i], DecodeParams(min_side=1, max_aspect=100.0))
            if not res.ok:
                raise UsageError(f"cannot train on {self.files[i]}: {res.reason} ({res.detail})")
            return res.image, None
        return np.asarray(self.rgb[i]), (None if self.five is None else np.asarray(self.five[i]))

    def matte(self, i: int) -> np.ndarray | None:
        """Image i's matte (H x W uint8, 255 = face), or None without one."""
        return None if self.alpha is None else np.asarray(self.alpha[i])


def composite(rgb: np.ndarray, alpha: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    """`rgb` (H x W x 3 uint8) over a plain `colour` with `alpha` (H x W uint8): rounded
    rgb * a + colour * (1 - a), a = alpha / 255."""
    a = alpha.astype(np.float32)[..., None] / 255.0
    out = rgb.astype(np.float32) * a + np.asarray(colour, np.float32) * (1.0 - a)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


@dataclass
class SamplerState:
    epoch: int = 0
    position: int = 0  # samples of this epoch already delivered (per rank)

    def for_world(self, old_world: int, new_world: int) -> "SamplerState":
        """The same place in the data for another number of processes: `position * world`
        samples of the epoch were delivered in all (rank r reads global positions
        position * world + r), which a global batch divisible by both worlds keeps exact."""
        return SamplerState(self.epoch, self.position * old_world // new_world)


INTERPOLATION = {"bilinear": 1, "bicubic": 2}   # cv2.INTER_LINEAR, cv2.INTER_CUBIC


class Augment:
    """Resize to load_px (spec.resize: bilinear or bicubic), random crop to crop_px, random
    flip, optional colour jitter (albumentations), seeded per sample."""

    def __init__(self, spec: DataSpec, jitter: float = 0.0):
        import albumentations as A

        self.spec = spec
        load = spec.load_px or spec.crop_px
        if spec.resize not in INTERPOLATION:
            raise UsageError(f"unknown resize {spec.resize!r} ({', '.join(INTERPOLATION)})")
        ops = [A.Resize(load, load, interpolation=INTERPOLATION[spec.resize])]
        if load != spec.crop_px:
            ops.append(A.RandomCrop(spec.crop_px, spec.crop_px))
        if spec.flip:
            ops.append(A.HorizontalFlip(p=0.5))
        if jitter > 0:
            ops.append(A.ColorJitter(brightness=jitter, contrast=jitter, saturation=jitter, hue=min(0.5, jitter / 4), p=1.0))
        self.compose = A.Compose(ops, keypoint_params=A.KeypointParams(format="xy", remove_invisible=False))

    def __call__(self, rgb: np.ndarray, five: np.ndarray | None, seed: int) -> tuple[np.ndarray, np.ndarray | None]:
        self.compose.set_random_seed(seed)
        kps = [] if five is None else np.asarray(five, np.float32).tolist()  # pixels of `rgb`
        out = self.compose(image=rgb, keypoints=kps)
        pts = None if five is None else np.asarray(out["keypoints"], np.float32).reshape(5, 2)
        if pts is not None and pts[0, 0] > pts[1, 0]:
            pts = pts[[1, 0, 2, 4, 3]]  # flipped: keep the schema's image-left / image-right order
        return out["image"], pts


class UnpairedDataset(Dataset):
    """Item i of an epoch = one sample per key, each from its own permutation. With
    `spec.composite` every image is first composited onto that colour with its matte."""

    def __init__(self, sources: dict[str, ImageSource], spec: DataSpec, seed: int, jitter: float = 0.0,
                 rank: int = 0, world: int = 1):
        if spec.composite is not None:
            lacking = sorted(k for k, s in sources.items() if s.alpha is None)
            if lacking:
                raise UsageError(f"data.composite needs the packed mattes, but {', '.join(lacking)} "
                                 "has none (train.source: folders); use train.source: packed or "
                                 "set data.composite \"\"")
        self.sources, self.spec, self.seed, self.rank, self.world = sources, spec, seed, rank, world
        self.jitter = jitter
        self.augment: Augment | None = None
        self.epoch = 0
        self.perms: dict[str, np.ndarray] = {}
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        """The epoch an integer index refers to (a sampler's (epoch, position) names its own)."""
        self.epoch = epoch
        self.perms = {k: np.random.default_rng([self.seed, epoch, n]).permutation(len(s))
                      for n, (k, s) in enumerate(sorted(self.sources.items()))}

    def __len__(self) -> int:
        # An epoch is as long as the largest domain, split evenly across ranks.
        return max(len(s) for s in self.sources.values()) // self.world

    def __getitem__(self, index: int | tuple[int, int]) -> dict[str, torch.Tensor]:
        """Sample `index`: a position in the current epoch, or (epoch, position). Images
        come as uint8 3 x H x W (`to_device` makes them float on the device)."""
        if self.augment is None:  # built lazily, in the worker process
            self.augment = Augment(self.spec, self.jitter)
        epoch, position = index if isinstance(index, tuple) else (self.epoch, index)
        if epoch != self.epoch:
            self.set_epoch(epoch)
        global_pos = position * self.world + self.rank
        item = {}
        for n, (key, source) in enumerate(sorted(self.sources.items())):
            perm = self.perms[key]
            idx = int(perm[global_pos % len(perm)])
            rgb, five = source.get(idx)
            if self.spec.composite is not None:
                rgb = composite(rgb, source.matte(idx), self.spec.composite)
            seed = int(np.random.default_rng([self.seed, self.epoch, global_pos, n]).integers(2**31))
            img, pts = self.augment(rgb, five if self.spec.with_landmarks else None, seed)
            img = np.ascontiguousarray(img)
            item[key] = torch.from_numpy(img if img.flags.writeable else img.copy()).permute(2, 0, 1)
            if pts is not None:
                item[f"{key}_five"] = torch.from_numpy(pts)
        return item


def to_device(batch: dict[str, torch.Tensor], device: torch.device, channels_last: bool = False
              ) -> dict[str, torch.Tensor]:
    """A batch on `device`: copied asynchronously (from pinned memory on CUDA), uint8 images
    converted there to float32 in [-1, 1] (x / 127.5 - 1), images channels_last if asked."""
    out = {}
    for k, v in batch.items():
        v = v.to(device, non_blocking=True)
        if v.dtype == torch.uint8:
            v = v.float().div_(127.5).sub_(1.0)
        if v.dim() == 4 and channels_last:
            v = v.contiguous(memory_format=torch.channels_last)
        out[k] = v
    return out


class _Positions:
    """The sampler: (epoch, position) from `state` on, epoch after epoch, each epoch's
    positions from its start to the last whole batch (a batch never spans two epochs)."""

    def __init__(self, state: SamplerState, per_epoch: int, batch_size: int):
        self.state, self.per_epoch, self.batch = state, per_epoch, batch_size

    def __iter__(self):
        epoch, start = self.state.epoch, self.state.position
        while True:
            whole = (self.per_epoch - start) // self.batch * self.batch
            for position in range(start, start + whole):
                yield epoch, position
            epoch, start = epoch + 1, 0


# With loader workers, each worker task makes this many samples at least (a chunk of
# whole batches, split again in the trainer's process): a task per batch of 1 costs more in
# inter-process transfer than its augmentation (CycleGAN 256 px: 416 samples/s with 2 workers
# against 983 in one process, on the AMX kind).
CHUNK_SAMPLES = 16


class _Chunks:
    """The batch sampler: `size` consecutive samples of the sampler at a time."""

    def __init__(self, positions: _Positions, size: int):
        self.positions, self.size = positions, size

    def __iter__(self):
        chunk = []
        for index in self.positions:
            chunk.append(index)
            if len(chunk) == self.size:
                yield chunk
                chunk = []


class BatchStream:
    """Endless batches with a checkpointable (epoch, position). With workers, each worker
    task makes a chunk of whole batches (`CHUNK_SAMPLES`), split here in order: the same
    batches as one at a time."""

    def __init__(self, dataset: UnpairedDataset, batch_size: int, workers: int, pin_memory: bool,
                 state: SamplerState | None = None, prefetch: int = 2):
        if len(dataset) < batch_size:
            raise UsageError(f"batch size {batch_size} is larger than the data ({len(dataset)} samples per rank)")
        self.ds, self.batch_size, self.workers, self.pin = dataset, batch_size, workers, pin_memory
        self.prefetch = prefetch
        self.state = state or SamplerState()
        self.per_epoch = (len(self.ds) // self.batch_size) * self.batch_size
        self.chunk = max(1, CHUNK_SAMPLES // batch_size) if workers else 1     # batches per worker task
        self._ready: list[dict[str, torch.Tensor]] = []
        self._it = None

    def _loader(self):
        with stops_blocked():   # workers start with the stops blocked: a stop now cannot kill one mid-start
            positions = _Positions(self.state, self.per_epoch, self.batch_size)
            return iter(DataLoader(self.ds, batch_sampler=_Chunks(positions, self.batch_size * self.chunk),
                                   num_workers=self.workers, pin_memory=self.pin,
                                   # its own generator: creating a loader must not consume the global
                                   # torch RNG, or a resumed run would diverge from an uninterrupted one
                                   generator=torch.Generator().manual_seed(self.ds.seed),
                                   worker_init_fn=_worker_init,
                                   prefetch_factor=self.prefetch if self.workers else None))

    def __next__(self) -> dict[str, torch.Tensor]:
        if self._it is None:
            self._it = self._loader()
            self._ready = []
            self._order = iter(_Positions(self.state, self.per_epoch, self.batch_size))   # the loader's order
        if not self._ready:
            chunk = next(self._it)
            parts = {k: v.split(self.batch_size) for k, v in chunk.items()}
            self._ready = [{k: v[i] for k, v in parts.items()} for i in range(self.chunk)][::-1]
        batch = self._ready.pop()
        for _ in range(self.batch_size):     # the samples the batch holds, in the sampler's order
            epoch, position = next(self._order)
        self.state = SamplerState(epoch, position + 1)
        return batch

    def __iter__(self):
        return self

    def close(self) -> None:
        """End the loader's worker processes now. They ignore SIGTERM (a stop signal for the
        process group is the trainer's to handle), so a loader left to the garbage collector
        could outlive the run: at exit multiprocessing would `terminate()` them, which they
        ignore, and then wait for them forever. A worker that does not end is killed."""
        it, self._it = self._it, None
        self._ready = []     # made ahead, not delivered: a new loader starts from self.state
        if it is None:
            return
        workers = list(getattr(it, "_workers", []))
        shutdown = getattr(it, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()
        for w in workers:
            if w.is_alive():
                w.kill()
                w.join(timeout=5)


def _worker_init(_: int) -> None:
    import cv2

    from toonlab.util.signals import ignore_stop_signals

    ignore_stop_signals()   # a stop for the process group is the trainer's to handle
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    info = get_worker_info()
    assert info is not None
