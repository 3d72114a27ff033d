"""Evaluation of trained translators: FID/KID on the pytorch-fid Inception features,
landmark preservation, PSNR/SSIM and identity-embedding similarity (see the modules)."""

from toonlab.eval.inception import (FEATURE_DIM, FID_WEIGHTS_FILE, FIDInception, fid_inception_available,
                                    fid_inception_v3, load_fid_inception)
from toonlab.eval.metrics import (cosine_similarity_embeddings, feature_statistics, fid_from_features,
                                  frechet_distance, kid_from_features, landmark_nme, landmark_preservation,
                                  mmd2_unbiased, polynomial_kernel, psnr, ssim)

__all__ = [
    "FEATURE_DIM", "FID_WEIGHTS_FILE", "FIDInception", "fid_inception_available", "fid_inception_v3",
    "load_fid_inception", "cosine_similarity_embeddings", "feature_statistics", "fid_from_features",
    "frechet_distance", "kid_from_features", "landmark_nme", "landmark_preservation", "mmd2_unbiased",
    "polynomial_kernel", "psnr", "ssim",
]
