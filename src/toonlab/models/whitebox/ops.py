"""The White-box cartoon representations (Wang and Yu, "Learning to Cartoonize Using
White-Box Cartoon Representations", CVPR 2020), each a function on batched tensors
(N x C x H x W in [-1, 1]). Follows the authors' TensorFlow training code
(SystemErrorWang/White-box-Cartoonization, train_code/guided_filter.py, utils.py, loss.py).

* `guided_filter`: the fast guided filter of the reference, per channel, box means over
  the part of the (2r+1)^2 window inside the image. `surface` = guided_filter(x, x, r 5,
  eps 0.2) on the colour image (the surface discriminator sees 3 channels).
* `color_shift`: random grey conversion for the texture representation, weights r, g, b
  drawn uniformly from [0.199, 0.399], [0.487, 0.687], [0.014, 0.214] (one draw per
  call, shared by every image passed), divided by their sum; output 1 channel.
* `segment` / `Segmenter`: superpixel labels of the generated image on the CPU (SLIC as
  the reference's `simple_superpixel`, Felzenszwalb, or SLIC regions merged
  hierarchically, the reference's selective-search option), optionally in worker
  processes; `superpixel_fill` paints each segment on the device (scatter ops) with its
  mean colour, or the reference's adaptive colour (`label2rgb(kind='mix')`: by the
  segment's standard deviation on the 0..255 scale, mean below 20, the average of mean
  and median up to 40, median above).
* `feature_l1`: the reference's VGG loss, mean absolute difference divided once more by
  the feature size h * w * c.
* `total_variation`: the reference's TV, (mean squared vertical difference + mean squared
  horizontal difference) / (C * H * W).

The reference reads images with OpenCV (BGR); here images are RGB and the colour-shift
weights are applied to the matching channels.
"""

from __future__ import annotations

import heapq
import multiprocessing
import time
import weakref
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from toonlab.util.codec import to_uint8

SegmentMethod = Literal["slic", "felzenszwalb", "selective"]
FillMode = Literal["mean", "adaptive"]

# The reference's uniform colour-shift ranges, (low, high) for r, g, b.
COLOR_SHIFT_RANGES = ((0.199, 0.399), (0.487, 0.687), (0.014, 0.214))
COLOR_SHIFT_MEAN = (0.299, 0.587, 0.114)


# ----------------------------------------------------------------------------- guided filter


def box_mean(x: Tensor, r: int) -> Tensor:
    """Mean over the (2r+1) x (2r+1) window around each pixel, counting only pixels inside
    the image (the reference's zero-padded box sum divided by the box sum of ones)."""
    return F.avg_pool2d(x, 2 * r + 1, stride=1, padding=r, count_include_pad=False)


def guided_filter(x: Tensor, y: Tensor, r: int, eps: float) -> Tensor:
    """Guided filter of `y` with guide `x` (He et al. 2010, per channel as in the reference):
    A = cov(x, y) / (var(x) + eps), b = mean(y) - A mean(x), out = mean(A) x + mean(b).

    x and y have the same shape (or x has 1 channel). Computed in float32 (float64 for
    float64 inputs) outside autocast: the variances cancel badly in half precision.
    """
    if r < 0:
        raise ValueError(f"guided_filter: r must be >= 0, got {r}")
    dtype = torch.float64 if torch.float64 in (x.dtype, y.dtype) else torch.float32
    with torch.autocast(x.device.type, enabled=False):
        x, y = x.to(dtype), y.to(dtype)
        if x.shape[1] != y.shape[1]:
            x = x.expand(-1, y.shape[1], -1, -1)
        c = y.shape[1]
        means = box_mean(torch.cat([x, y, x * y, x * x], dim=1), r)
        mean_x, mean_y, mean_xy, mean_xx = means.split(c, dim=1)
        cov_xy = mean_xy - mean_x * mean_y
        var_x = mean_xx - mean_x * mean_x
        a = cov_xy / (var_x + eps)
        b = mean_y - a * mean_x
        mean_a, mean_b = box_mean(torch.cat([a, b], dim=1), r).split(c, dim=1)
        return mean_a * x + mean_b


def surface(x: Tensor, r: int = 5, eps: float = 0.2) -> Tensor:
    """The surface representation: edge-preserving smoothing of the colour image by a
    guided filter with itself as guide (reference: r 5, eps 2e-1)."""
    return guided_filter(x, x, r, eps)


# ----------------------------------------------------------------------------- texture


def color_shift_weights(generator: torch.Generator | None = None,
                        mode: Literal["uniform", "normal"] = "uniform") -> Tensor:
    """The (r, g, b) weights of one colour shift, drawn on the CPU from `generator`."""
    if mode == "uniform":
        u = torch.rand(3, generator=generator, dtype=torch.float64)
        lo = torch.tensor([a for a, _ in COLOR_SHIFT_RANGES], dtype=torch.float64)
        hi = torch.tensor([b for _, b in COLOR_SHIFT_RANGES], dtype=torch.float64)
        return (lo + u * (hi - lo)).float()
    if mode == "normal":
        z = torch.randn(3, generator=generator, dtype=torch.float64)
        return (torch.tensor(COLOR_SHIFT_MEAN, dtype=torch.float64) + 0.1 * z).float()
    raise ValueError(f"color_shift: mode must be 'uniform' or 'normal', got {mode!r}")


def color_shift(*images: Tensor, generator: torch.Generator | None = None,
                mode: Literal["uniform", "normal"] = "uniform",
                weights: Tensor | None = None) -> tuple[Tensor, ...]:
    """The texture representation: each N x 3 x H x W image to N x 1 x H x W grey by
    (w_r R + w_g G + w_b B) / (w_r + w_g + w_b), with one random weight triple shared by
    all `images` (as the reference shifts the generated and the cartoon batch alike).
    Deterministic for a given generator state; `weights` overrides the draw."""
    if not images:
        raise ValueError("color_shift: no images")
    w = color_shift_weights(generator, mode) if weights is None else weights.float().cpu()
    w = w / w.sum()
    out = []
    for img in images:
        if img.dim() != 4 or img.shape[1] != 3:
            raise ValueError(f"color_shift: expected N x 3 x H x W, got {tuple(img.shape)}")
        wd = w.to(device=img.device, dtype=img.dtype, non_blocking=True).view(1, 3, 1, 1)
        out.append((img * wd).sum(dim=1, keepdim=True))
    return tuple(out)


# ----------------------------------------------------------------------------- content / TV


def feature_l1(a: Tensor, b: Tensor) -> Tensor:
    """The reference's VGG loss: mean |a - b| divided by the feature size c * h * w."""
    c, h, w = a.shape[1:]
    return F.l1_loss(a.float(), b.float()) / float(c * h * w)


def total_variation(x: Tensor) -> Tensor:
    """The reference's total variation: (mean of squared vertical differences + mean of
    squared horizontal differences) / (C * H * W). Zero for a constant image."""
    n, c, h, w = x.shape
    x = x.float()
    tv_h = (x[:, :, 1:, :] - x[:, :, :-1, :]).square().mean()
    tv_w = (x[:, :, :, 1:] - x[:, :, :, :-1]).square().mean()
    return (tv_h + tv_w) / float(c * h * w)


# ----------------------------------------------------------------------------- structure: segmentation (CPU)


def _relabel(labels: np.ndarray) -> np.ndarray:
    """Labels 0..K-1 in order of first appearance of their value (sorted unique)."""
    _, inv = np.unique(labels, return_inverse=True)
    return inv.reshape(labels.shape).astype(np.int32)


def felzenszwalb_min_size(h: int, w: int, segments: int) -> int:
    """Smallest Felzenszwalb region so that at most `segments` regions remain."""
    return max(1, -(-h * w // max(1, segments)))


def merge_regions(labels: np.ndarray, features: np.ndarray, target: int) -> np.ndarray:
    """Hierarchical grouping of adjacent regions until `target` remain (the reference's
    selective-search option, simplified): repeatedly merge the adjacent pair with the
    smallest Ward cost n_i n_j / (n_i + n_j) * |mean_i - mean_j|^2 of their mean colours
    (`features`: H x W x D, e.g. Lab), so similar colours and small regions go first.
    Returns labels 0..K-1."""
    labels = _relabel(labels)
    k = int(labels.max()) + 1
    if k <= target:
        return labels
    flat = labels.ravel()
    feats = features.reshape(-1, features.shape[-1]).astype(np.float64)
    count = np.bincount(flat, minlength=k).astype(np.float64)
    sums = np.stack([np.bincount(flat, weights=feats[:, d], minlength=k) for d in range(feats.shape[1])], 1)
    pairs = np.concatenate([
        np.stack([labels[:, :-1].ravel(), labels[:, 1:].ravel()], 1),
        np.stack([labels[:-1, :].ravel(), labels[1:, :].ravel()], 1)])
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    pairs = np.unique(np.sort(pairs, axis=1), axis=0)
    neighbours: list[set[int]] = [set() for _ in range(k)]
    for i, j in pairs.tolist():
        neighbours[i].add(j)
        neighbours[j].add(i)
    count_l, sums_l = count.tolist(), [s for s in sums]
    version = [0] * k
    alive = [True] * k
    parent = list(range(k))

    def cost(i: int, j: int) -> float:
        d = sums_l[i] / count_l[i] - sums_l[j] / count_l[j]
        return count_l[i] * count_l[j] / (count_l[i] + count_l[j]) * float(d @ d)

    heap = [(cost(i, j), i, j, 0, 0) for i, j in pairs.tolist()]
    heapq.heapify(heap)
    remaining = k
    while remaining > target and heap:
        _, i, j, vi, vj = heapq.heappop(heap)
        if not (alive[i] and alive[j]) or version[i] != vi or version[j] != vj:
            continue
        # merge j into i
        alive[j] = False
        parent[j] = i
        count_l[i] += count_l[j]
        sums_l[i] = sums_l[i] + sums_l[j]
        version[i] += 1
        nb = (neighbours[i] | neighbours[j]) - {i, j}
        for m in neighbours[j]:
            neighbours[m].discard(j)
            if m != i:
                neighbours[m].add(i)
        neighbours[i] = nb
        neighbours[j] = set()
        for m in nb:
            heapq.heappush(heap, (cost(i, m), i, m, version[i], version[m]) if i < m
                           else (cost(m, i), m, i, version[m], version[i]))
        remaining -= 1
    root = np.arange(k)
    for a in range(k):   # resolve merge chains
        b = a
        while parent[b] != b:
            b = parent[b]
        root[a] = b
    return _relabel(root[labels])


def segment(image: np.ndarray, method: SegmentMethod = "slic", segments: int = 200) -> np.ndarray:
    """Superpixel labels (H x W int32, 0..K-1) of one H x W x 3 uint8 RGB image.

    slic: SLIC with `segments` regions, sigma 1, compactness 10, in Lab (the reference's
    `simple_superpixel`). felzenszwalb: the reference's scale 10 and sigma 0.8, with
    min_size = H*W / segments so that at most `segments` regions remain (the reference's
    min_size 100 over-segments for its selective search). selective: SLIC with 4 x
    `segments` regions merged by `merge_regions` (Lab colour) down to `segments` (the
    reference groups Felzenszwalb regions by selective search).
    """
    from skimage import color, segmentation

    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"segment: expected an H x W x 3 uint8 image, got {image.shape} {image.dtype}")
    img = image.astype(np.float32) / 255.0
    if method == "slic":
        labels = segmentation.slic(img, n_segments=segments, sigma=1, compactness=10, convert2lab=True,
                                   start_label=0, channel_axis=-1)
    elif method == "felzenszwalb":
        labels = segmentation.felzenszwalb(img, scale=10, sigma=0.8,
                                           min_size=felzenszwalb_min_size(*img.shape[:2], segments),
                                           channel_axis=-1)
    elif method == "selective":
        labels = segmentation.slic(img, n_segments=4 * segments, sigma=1, compactness=10, convert2lab=True,
                                   start_label=0, channel_axis=-1)
        labels = merge_regions(labels, color.rgb2lab(img), segments)
    else:
        raise ValueError(f"segment: unknown method {method!r} (slic, felzenszwalb, selective)")
    return _relabel(labels)


def _segment_task(image: np.ndarray, method: str, segments: int) -> tuple[np.ndarray, float]:
    """Worker entry point: labels and the seconds spent."""
    t = time.perf_counter()
    labels = segment(image, method, segments)  # type: ignore[arg-type]
    return labels, time.perf_counter() - t


@dataclass
class PendingLabels:
    """Labels being computed for one batch; `result` blocks until all are in."""

    futures: list[Future] | None = None
    ready: list[tuple[np.ndarray, float]] | None = None
    submitted: float = field(default_factory=time.perf_counter)

    def result(self) -> tuple[np.ndarray, float, float]:
        """(N x H x W int32 labels, seconds waited here, seconds of segmentation work)."""
        t = time.perf_counter()
        parts = self.ready if self.ready is not None else [f.result() for f in self.futures or []]
        waited = time.perf_counter() - t
        return np.stack([p[0] for p in parts]), waited, float(sum(p[1] for p in parts))


class Segmenter:
    """Superpixel labels of batches, computed while the caller does other work.

    workers 0: in the calling process, at `submit` (tests, debugging). workers > 0: a
    `ProcessPoolExecutor` with the spawn start method (started on first use; one task per
    image). scikit-image's SLIC holds the GIL for much of its work, so threads do not
    scale; processes do (see `toonlab.models.whitebox.model`).
    """

    def __init__(self, method: SegmentMethod = "slic", segments: int = 200, workers: int = 0):
        if workers < 0:
            raise ValueError("Segmenter: workers must be >= 0")
        self.method, self.segments, self.workers = method, int(segments), int(workers)
        self._pool: ProcessPoolExecutor | None = None
        self._finalizer: weakref.finalize | None = None

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            from toonlab.util.signals import ignore_stop_signals

            self._pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=ignore_stop_signals)
            self._finalizer = weakref.finalize(self, self._pool.shutdown, wait=False, cancel_futures=True)
        return self._pool

    def submit(self, images: Tensor | np.ndarray) -> PendingLabels:
        """Start segmenting N x 3 x H x W images in [-1, 1] (or N x H x W x 3 uint8)."""
        arr = images if isinstance(images, np.ndarray) else to_uint8(images)
        if self.workers == 0:
            return PendingLabels(ready=[_segment_task(a, self.method, self.segments) for a in arr])
        pool = self._executor()
        return PendingLabels(futures=[pool.submit(_segment_task, a, self.method, self.segments) for a in arr])

    def labels(self, images: Tensor | np.ndarray) -> np.ndarray:
        """Submit and wait: N x H x W int32 labels."""
        return self.submit(images).result()[0]

    def close(self) -> None:
        if self._finalizer is not None:
            self._finalizer()
        self._pool, self._finalizer = None, None

    def __getstate__(self):
        raise TypeError("Segmenter holds a process pool and cannot be pickled")


# ----------------------------------------------------------------------------- structure: fill (device)


def _flat_ids(labels: Tensor, num_labels: int | None) -> tuple[Tensor, int]:
    """Per-image labels N x H x W -> ids unique over the batch (N*H*W,), and their count."""
    n = labels.shape[0]
    k = int(labels.max()) + 1 if num_labels is None else int(num_labels)
    offsets = torch.arange(n, device=labels.device, dtype=torch.long).view(n, 1, 1) * k
    return (labels.long() + offsets).reshape(-1), n * k


def segment_means(x: Tensor, labels: Tensor, num_labels: int | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """(means S x C, counts S, ids) of x over the segments; S = N * num_labels."""
    n, c, h, w = x.shape
    ids, s = _flat_ids(labels.to(x.device), num_labels)
    xf = x.float().permute(0, 2, 3, 1).reshape(-1, c)
    sums = torch.zeros(s, c, device=x.device, dtype=torch.float32).index_add_(0, ids, xf)
    counts = torch.bincount(ids, minlength=s).to(torch.float32)
    return sums / counts.clamp(min=1).unsqueeze(1), counts, ids


def segment_medians(x: Tensor, ids: Tensor, counts: Tensor) -> Tensor:
    """Per-segment, per-channel medians (numpy's: the mean of the two middle values for an
    even count), by sorting values by (segment, value) on the device. S x C."""
    c = x.shape[1]
    xf = x.float().permute(0, 2, 3, 1).reshape(-1, c)
    by_value = torch.argsort(xf, dim=0, stable=True)                 # P x C
    ids_c = ids.unsqueeze(1).expand(-1, c)
    by_id = torch.argsort(ids_c.gather(0, by_value), dim=0, stable=True)
    ordered = xf.gather(0, by_value.gather(0, by_id))                 # sorted by segment, then value
    cnt = counts.long()
    starts = torch.cumsum(cnt, 0) - cnt
    lo = (starts + (cnt - 1).clamp(min=0) // 2).clamp(max=xf.shape[0] - 1)
    hi = (starts + cnt // 2).clamp(max=xf.shape[0] - 1)
    return 0.5 * (ordered[lo] + ordered[hi])


def superpixel_fill(x: Tensor, labels: Tensor, mode: FillMode = "mean", num_labels: int | None = None) -> Tensor:
    """The structure representation: every segment of each image painted with one colour.

    labels: N x H x W integer segment ids per image (0..num_labels-1; counted from the
    labels, a host sync, when num_labels is None). mode "mean": the segment's mean colour.
    mode "adaptive": the reference's label2rgb 'mix' (std of all the segment's values on
    the 0..255 scale below 20: mean; 20 to 40: (mean + median) / 2; above: median).
    Returns float32 N x C x H x W.
    """
    n, c, h, w = x.shape
    if labels.shape != (n, h, w):
        raise ValueError(f"superpixel_fill: labels {tuple(labels.shape)} do not match images {tuple(x.shape)}")
    means, counts, ids = segment_means(x, labels, num_labels)
    if mode == "mean":
        colour = means
    elif mode == "adaptive":
        s = (x.float() + 1) * 127.5
        sf = s.permute(0, 2, 3, 1).reshape(-1, c)
        tot = counts.clamp(min=1) * c
        e1 = torch.zeros_like(counts).index_add_(0, ids, sf.sum(1)) / tot
        e2 = torch.zeros_like(counts).index_add_(0, ids, sf.square().sum(1)) / tot
        std = (e2 - e1.square()).clamp(min=0).sqrt().unsqueeze(1)
        medians = segment_medians(x, ids, counts)
        colour = torch.where(std < 20, means, torch.where(std <= 40, 0.5 * (means + medians), medians))
    else:
        raise ValueError(f"superpixel_fill: unknown mode {mode!r} (mean, adaptive)")
    return colour[ids].view(n, h, w, c).permute(0, 3, 1, 2).contiguous()
