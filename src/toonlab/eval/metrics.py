"""Evaluation metrics for photo-to-anime translation.

Distribution metrics (numpy float64, on feature matrices: one row per image):

* FID, Fréchet Inception Distance (Heusel et al. 2017), computed as pytorch-fid does:
  means and covariances (``np.cov``, ddof 1) of the two feature sets,
  ``||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2))`` with ``scipy.linalg.sqrtm`` and,
  when the product's square root is not finite, the retry with ``1e-6 * I`` added to both
  covariances. Units: raw squared feature distances, as papers report it.
* KID, Kernel Inception Distance (Bińkowski et al. 2018), as torch-fidelity computes it:
  the unbiased estimator of the squared MMD with the cubic polynomial kernel
  ``k(x, y) = (x.y / d + 1)^3``, averaged over random subsets drawn without replacement;
  returns the raw mean and the standard deviation (``np.std``, ddof 0) over subsets.
  Papers such as U-GAT-IT report KID x 100: the caller scales, nothing here does.

Per-image metrics:

* landmark NME: mean Euclidean distance between the five landmarks found on the output
  and on the input, divided by the input's inter-ocular distance (eye centres, rows 0 and 1
  of ``toonlab.faces.base.FIVE_POINT_NAMES``); unitless, 0 is perfect.
* PSNR (dB) and SSIM (Wang et al. 2004) on torch tensors N x C x H x W, matching
  ``skimage.metrics.peak_signal_noise_ratio`` and ``structural_similarity`` with
  ``gaussian_weights=True, sigma=1.5, use_sample_covariance=False`` (11-tap Gaussian
  window, K1 0.01, K2 0.03, channels averaged, the 5-pixel border left out).
* cosine similarity of identity embeddings, per row.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy import linalg
from torch import Tensor

from toonlab.errors import ToonlabError, UsageError
from toonlab.log import get_logger

log = get_logger(__name__)

FID_EPS = 1e-6
SSIM_SIGMA = 1.5
SSIM_WIN = 11
SSIM_K1 = 0.01
SSIM_K2 = 0.03


# ----------------------------------------------------------------------------- FID


def _features(f: np.ndarray, what: str, min_rows: int = 2) -> np.ndarray:
    a = np.asarray(f, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"{what}: expected a 2-D array (images x features), got shape {a.shape}")
    if a.shape[0] < min_rows:
        raise UsageError(f"{what}: needs at least {min_rows} images, got {a.shape[0]}")
    if not np.isfinite(a).all():
        raise ValueError(f"{what}: contains NaN or infinite values")
    return a


def _same_dim(f1: np.ndarray, f2: np.ndarray) -> None:
    if f1.shape[1] != f2.shape[1]:
        raise ValueError(f"feature sizes differ: {f1.shape[1]} vs {f2.shape[1]}")


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (d,) and covariance (d, d) of an images x d feature matrix (ddof 1, as pytorch-fid)."""
    f = _features(features, "features")
    return f.mean(axis=0), np.atleast_2d(np.cov(f, rowvar=False))


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = FID_EPS) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2).

    ``||mu1 - mu2||^2 + tr(sigma1) + tr(sigma2) - 2 tr((sigma1 sigma2)^(1/2))``. When the
    square root of the product is not finite (singular product), it is recomputed with
    ``eps * I`` added to both covariances. Imaginary parts from rounding are dropped; a
    diagonal imaginary part above 1e-3 raises ToonlabError (too few images for the
    feature size, usually).
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    d = mu1.shape[0]
    if mu1.shape != (d,) or mu2.shape != (d,) or s1.shape != (d, d) or s2.shape != (d, d):
        raise ValueError(f"frechet_distance: shapes do not agree: mu1 {mu1.shape}, mu2 {mu2.shape}, "
                         f"sigma1 {s1.shape}, sigma2 {s2.shape}")
    diff = mu1 - mu2
    covmean = linalg.sqrtm(s1 @ s2)
    if not np.isfinite(covmean).all():
        log.warning("FID: the product of the covariances is singular; adding %g to their diagonals", eps)
        offset = np.eye(d) * eps
        covmean = linalg.sqrtm((s1 + offset) @ (s2 + offset))
    if np.iscomplexobj(covmean):
        imag = np.abs(np.diagonal(covmean).imag).max()
        if imag > 1e-3:
            raise ToonlabError(f"FID: matrix square root has an imaginary component of {imag:.3g}; "
                               "the covariance estimates are too poor (use more images than features)")
        covmean = covmean.real
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(covmean))


def fid_from_features(f1: np.ndarray, f2: np.ndarray) -> float:
    """FID between two feature sets (images x d each, at least 2 images each)."""
    a, b = _features(f1, "FID set 1"), _features(f2, "FID set 2")
    _same_dim(a, b)
    return frechet_distance(*feature_statistics(a), *feature_statistics(b))


# ----------------------------------------------------------------------------- KID


def polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """KID's kernel matrix ``(x.y / d + 1)^3`` between the rows of x (m x d) and y (n x d)."""
    d = x.shape[1]
    return (x @ y.T / d + 1.0) ** 3


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased estimate of the squared MMD with KID's kernel between samples x (m x d) and
    y (n x d): mean of k(x_i, x_j) over i != j, plus the same for y, minus twice the mean
    of k(x_i, y_j) over all pairs. For m == n this is torch-fidelity's ``mmd2`` (unbiased)."""
    m, n = x.shape[0], y.shape[0]
    if m < 2 or n < 2:
        raise UsageError(f"KID: each subset needs at least 2 images, got {m} and {n}")
    kxx, kyy, kxy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
    xx = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    yy = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    return float(xx + yy - 2.0 * kxy.sum() / (m * n))


def kid_from_features(f1: np.ndarray, f2: np.ndarray, subsets: int = 100, subset_size: int = 1000,
                      seed: int = 0,
                      subset_indices: Sequence[tuple[Sequence[int], Sequence[int]]] | None = None,
                      ) -> tuple[float, float]:
    """KID between two feature sets: (mean, std) of the unbiased MMD^2 over subsets.

    Each of `subsets` rounds draws `subset_size` rows of each set without replacement
    (numpy ``default_rng(seed)``). `subset_size` is clipped to the smaller set's size;
    a set whose size equals the subset size is used whole, in order, so ``subsets=1`` with
    ``subset_size >= len`` of two equal-size sets is the deterministic full-set estimate.
    `subset_indices`, a list of (rows of f1, rows of f2) pairs, replaces the random draws
    (then `subsets`, `subset_size` and `seed` are not used; the pairs may differ in size).
    Raw values: multiply by 100 for the convention of U-GAT-IT's tables.
    """
    a, b = _features(f1, "KID set 1"), _features(f2, "KID set 2")
    _same_dim(a, b)
    if subset_indices is not None:
        pairs = [(np.asarray(i, dtype=np.int64), np.asarray(j, dtype=np.int64)) for i, j in subset_indices]
        if not pairs:
            raise ValueError("KID: subset_indices is empty")
    else:
        if subsets < 1:
            raise ValueError(f"KID: subsets must be >= 1, got {subsets}")
        if subset_size < 2:
            raise ValueError(f"KID: subset_size must be >= 2, got {subset_size}")
        m = min(subset_size, a.shape[0], b.shape[0])
        rng = np.random.default_rng(seed)

        def draw(n: int) -> np.ndarray:
            return np.arange(n) if m == n else rng.choice(n, m, replace=False)

        pairs = [(draw(a.shape[0]), draw(b.shape[0])) for _ in range(subsets)]
    values = np.array([mmd2_unbiased(a[i], b[j]) for i, j in pairs])
    return float(values.mean()), float(values.std())


# ----------------------------------------------------------------------------- landmarks


def landmark_nme(pred: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Per-image normalised mean error of landmarks: N x K x 2 (or K x 2) points each.

    ``mean_k ||pred_k - ref_k|| / ||ref_0 - ref_1||`` (rows 0 and 1 are the eye centres in
    the five-point order). NaN where `pred` has NaN points or `ref`'s eyes coincide.
    """
    p, r = np.asarray(pred, np.float64), np.asarray(ref, np.float64)
    if p.ndim == 2:
        p = p[None]
    if r.ndim == 2:
        r = r[None]
    if p.shape != r.shape or p.ndim != 3 or p.shape[2] != 2 or p.shape[1] < 2:
        raise ValueError(f"landmark_nme: expected two N x K x 2 arrays (K >= 2) of the same shape, "
                         f"got {np.shape(pred)} and {np.shape(ref)}")
    iod = np.linalg.norm(r[:, 0] - r[:, 1], axis=-1)
    err = np.linalg.norm(p - r, axis=-1).mean(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        nme = err / iod
    nme[~(iod > 0)] = np.nan
    return nme


def landmark_preservation(preds: Sequence[np.ndarray | None], refs: Sequence[np.ndarray | None],
                          ) -> dict[str, float | int]:
    """Summary of landmark preservation over image pairs (output landmarks, input landmarks).

    A pair whose reference is None is left out entirely (no face on the input). A
    prediction that is None or has NaN points counts as "no face found on the output".
    Returns ``n`` (pairs with a reference), ``detection_rate`` (outputs with a face / n)
    and ``nme_mean`` / ``nme_median`` over the detected pairs with a finite NME
    (NaN when there are none; detection_rate is NaN when n is 0).
    """
    if len(preds) != len(refs):
        raise ValueError(f"landmark_preservation: {len(preds)} predictions for {len(refs)} references")
    n, found_p, found_r = 0, [], []
    for p, r in zip(preds, refs):
        if r is None:
            continue
        n += 1
        if p is None or not np.isfinite(np.asarray(p, np.float64)).all():
            continue
        found_p.append(np.asarray(p, np.float64))
        found_r.append(np.asarray(r, np.float64))
    nme = landmark_nme(np.stack(found_p), np.stack(found_r)) if found_p else np.zeros(0)
    nme = nme[np.isfinite(nme)]
    return {
        "nme_mean": float(nme.mean()) if nme.size else math.nan,
        "nme_median": float(np.median(nme)) if nme.size else math.nan,
        "detection_rate": len(found_p) / n if n else math.nan,
        "n": n,
    }


# ----------------------------------------------------------------------------- PSNR / SSIM


def _image_pair(a: Tensor, b: Tensor, what: str) -> tuple[Tensor, Tensor]:
    if not (isinstance(a, Tensor) and isinstance(b, Tensor)):
        raise TypeError(f"{what}: expected torch tensors")
    if a.shape != b.shape or a.ndim != 4:
        raise ValueError(f"{what}: expected two N x C x H x W tensors of the same shape, "
                         f"got {tuple(a.shape)} and {tuple(b.shape)}")
    return a.to(torch.float64), b.to(device=a.device, dtype=torch.float64)


def psnr(a: Tensor, b: Tensor, data_range: float = 2.0) -> Tensor:
    """Per-image PSNR in dB, ``10 log10(data_range^2 / MSE)`` over all channels and pixels
    (float64, shape N; inf for identical images). data_range 2.0 suits [-1, 1] images."""
    x, y = _image_pair(a, b, "psnr")
    mse = (x - y).pow(2).flatten(1).mean(1)
    return 10.0 * torch.log10(data_range ** 2 / mse)


def _gaussian_taps(sigma: float, win: int, device: torch.device) -> Tensor:
    r = (win - 1) // 2
    t = torch.arange(-r, r + 1, dtype=torch.float64, device=device)
    g = torch.exp(-0.5 * (t / sigma) ** 2)
    return g / g.sum()


def ssim(a: Tensor, b: Tensor, data_range: float = 2.0, *, win_size: int = SSIM_WIN,
         sigma: float = SSIM_SIGMA, k1: float = SSIM_K1, k2: float = SSIM_K2) -> Tensor:
    """Per-image mean SSIM (float64, shape N), averaged over channels.

    Local statistics with a separable Gaussian window (`win_size` taps, `sigma`), population
    (co)variances, C1 = (k1 R)^2, C2 = (k2 R)^2 with R = data_range; the map is averaged over
    the positions where the window fits inside the image, which is what skimage's
    ``structural_similarity`` averages after cropping its border.
    """
    x, y = _image_pair(a, b, "ssim")
    if win_size < 3 or win_size % 2 == 0:
        raise ValueError(f"ssim: win_size must be odd and >= 3, got {win_size}")
    n, c, h, w = x.shape
    if h < win_size or w < win_size:
        raise ValueError(f"ssim: images of {h}x{w} are smaller than the {win_size}x{win_size} window")
    g = _gaussian_taps(sigma, win_size, x.device)
    stack = torch.cat([x, y, x * x, y * y, x * y], 1)            # N x 5C x H x W
    groups = stack.shape[1]
    stack = F.conv2d(stack, g.view(1, 1, win_size, 1).expand(groups, 1, win_size, 1), groups=groups)
    stack = F.conv2d(stack, g.view(1, 1, 1, win_size).expand(groups, 1, 1, win_size), groups=groups)
    ux, uy, uxx, uyy, uxy = stack.split(c, dim=1)
    vx, vy, vxy = uxx - ux * ux, uyy - uy * uy, uxy - ux * uy
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s.flatten(1).mean(1)


# ----------------------------------------------------------------------------- embeddings


def cosine_similarity_embeddings(e1: np.ndarray, e2: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two N x D (or D) embedding arrays, float64 shape N;
    NaN for a row where either vector is zero."""
    a, b = np.atleast_2d(np.asarray(e1, np.float64)), np.atleast_2d(np.asarray(e2, np.float64))
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"cosine_similarity_embeddings: shapes differ or are not N x D: "
                         f"{np.shape(e1)} and {np.shape(e2)}")
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        cos = (a * b).sum(axis=1) / norms
    cos[~(norms > 0)] = np.nan
    return cos
