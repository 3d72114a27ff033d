"""The params.yaml sections of the face pipeline (detect, matte, preprocess, align,
curate, pack). Light: pydantic only."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from toonlab.schema import Section


class DetectParams(Section):
    """Face detection parameters (params.yaml section ``detect``)."""

    # Backend for photos: mediapipe (bundled, offline) or insightface (needs buffalo_l on disk).
    photo_backend: Literal["mediapipe", "insightface"] = "mediapipe"
    # Backend for anime images.
    anime_backend: Literal["animeface"] = "animeface"
    # Detector confidence below which a face is not reported (BlazeFace / SCRFD / animeface).
    min_score: Annotated[float, Field(ge=0.0, le=1.0)] = 0.5
    # mediapipe: levels of overlapping square tiles run besides the whole image. Level k
    # has tiles of tile_side x L / 2**k (L = the long side), as few as cover the image with
    # neighbours overlapping by at least tile_overlap x L / 2**k, so a face up to that
    # overlap wide lies whole in some tile (the whole image finds the larger ones); levels
    # whose L / 2**k is under 256 px are skipped. 0 = whole image only (faster, misses
    # small faces in group photos).
    tile_levels: Annotated[int, Field(ge=0, le=3)] = 1
    # The defaults give 2 x 2 tiles of 0.5625 L at level 1 overlapping by L / 8 (faces up
    # to 0.125 L; the whole image finds faces down to about 0.1 L). 1.0 and 0.5 are the
    # earlier 3 x 3 half-step tiles (9 passes instead of 4, each ~7 ms on one core).
    tile_side: Annotated[float, Field(ge=1.0, le=2.0)] = 1.125
    tile_overlap: Annotated[float, Field(ge=0.0, le=1.0)] = 0.25
    # mediapipe: skip the tile passes when the whole-image passes already found a face at
    # least this wide, as a fraction of the image's long side (a portrait: the tiles look
    # for faces under about a tenth of it, several times smaller than that face). 0 = tile
    # every image (to find tiny bystanders beside a portrait, e.g. with multi_face: keep_all).
    tiles_skip_face_frac: Annotated[float, Field(ge=0.0, le=1.0)] = 0.18
    # mediapipe: side of the square crop given to the face mesh, in face-box sizes.
    mesh_crop_scale: Annotated[float, Field(ge=1.2, le=4.0)] = 2.0
    # mediapipe: what to do with a detection the face mesh cannot fit: drop it (the mesh
    # then doubles as a check that removes BlazeFace's false positives) or keep it with
    # five points built from BlazeFace's keypoints (see module docstring).
    mesh_fallback: Literal["drop", "keypoints"] = "drop"
    # mediapipe: eye centre = midpoint of the eye corners (stable under gaze and closed
    # eyes) or the iris centre (the pupil, follows the gaze).
    eye_points: Literal["corners", "iris"] = "corners"
    # insightface: SCRFD input sides in pixels, one pass each, merged (insightface's own
    # default: 128 for faces that fill the frame, 640 for the rest).
    insightface_det_px: Annotated[
        list[Annotated[int, Field(ge=64, le=2048, multiple_of=32)]],
        Field(min_length=1, max_length=4)] = [128, 640]


class MatteParams(Section):
    """Background removal. `photo_backend`/`anime_backend` pick the backend per domain; the
    other keys tune the backends (each backend ignores the keys of the others)."""

    # Photos: mediapipe (selfie segmentation, model bundled in the wheel, offline) or rembg
    # (u2net_human_seg.onnx must already be in $U2NET_HOME or ~/.u2net; never downloaded).
    photo_backend: Literal["mediapipe", "rembg"] = "mediapipe"
    # Anime: floodfill (offline, flat backgrounds only, LOWER QUALITY) or rembg (isnet-anime.onnx).
    anime_backend: Literal["floodfill", "rembg"] = "floodfill"

    # --- mediapipe
    # Selfie segmentation model: 0 = "general" (256x256 input; better on portraits and upper
    # bodies: on skimage's astronaut the flag behind her gets mean alpha 0.04, against 0.23
    # with model 1), 1 = "landscape" (144x256, a little faster, made for video calls).
    mediapipe_model: Literal[0, 1] = 0
    # Guided-filter refinement radius, as a fraction of the image's shorter side (0 = off):
    # snaps the blurry, upsampled 256x256 mask onto the image's edges (hair, shoulders).
    refine_radius: Annotated[float, Field(ge=0.0, le=0.1)] = 0.008
    # Guided-filter regularisation (image in [0, 1]): larger = smoother, follows edges less.
    refine_eps: Annotated[float, Field(gt=0.0, le=1.0)] = 0.002
    # Guided filter computed on the image shrunk this many times and applied at full size
    # (the fast guided filter: ~3x faster at 512 px, mattes within 1% IoU of the exact
    # filter); 1 = exact.
    refine_subsample: Annotated[int, Field(ge=1, le=8)] = 2

    # --- floodfill (anime fallback)
    # Work on the image downscaled to at most this many pixels on its longer side (speed);
    # the matte is scaled back to the input size.
    work_side: Annotated[int, Field(ge=64, le=4096)] = 512
    # Pixels whose Lab gradient (delta E per pixel) is below this are flat colour; background
    # regions are grown through flat pixels only, so outlines and edges stop them.
    flat_threshold: Annotated[float, Field(gt=0.0, le=50.0)] = 2.5
    # Delta E within which a region's colour counts as the background's (half of it for
    # regions enclosed by the subject, e.g. background seen between a twin tail and the neck).
    match_tolerance: Annotated[float, Field(gt=0.0, le=50.0)] = 8.0
    # Border regions touching the top edge, or the left/right edges within this upper fraction
    # of the height, seed the background (subjects enter from the bottom).
    upper_side_frac: Annotated[float, Field(gt=0.0, le=1.0)] = 0.6
    # Candidate foreground further than this fraction of the shorter side from any background
    # estimate is fixed as foreground for GrabCut (protects light skin and white clothes).
    sure_fg_margin: Annotated[float, Field(ge=0.0, le=0.5)] = 0.02
    # GrabCut iterations settling the boundary by colour (0 = flood-fill estimate only).
    grabcut_iters: Annotated[int, Field(ge=0, le=20)] = 4
    # Gaussian sigma, in pixels of the input, of the feathered edge (0 = hard edge).
    feather_px: Annotated[float, Field(ge=0.0, le=20.0)] = 1.0

    # --- output
    # Matte PNGs: fast (zlib level 1, run-length strategy) or small (zlib level 6, ~2x
    # slower to write); lossless either way.
    png_compression: Literal["fast", "small"] = "fast"


class PreprocessParams(Section):
    work_dir: str = "data/faces"              # detect and matte outputs
    cache_dir: str = ".toonlab-cache"         # per-image results (outside DVC outputs)
    multi_face: Literal["keep_largest", "keep_all", "reject"] = "keep_largest"
    min_face_px: Annotated[int, Field(ge=8)] = 48
    max_yaw: Annotated[float, Field(ge=0, le=90)] = 45.0
    min_blur: Annotated[float, Field(ge=0)] = 10.0
    # Reject aligned crops whose matte is mostly background (the segmenter missed the person).
    max_bg_fraction: Annotated[float, Field(ge=0, le=1)] = 0.85


class AlignParams(Section):
    out_dir: str = "data/processed"
    # Crop PNGs: fast (zlib level 1, run-length strategy: a 256 px photo crop in ~10 ms
    # instead of ~50, files ~5% larger) or small (zlib level 6); lossless either way.
    png_compression: Literal["fast", "small"] = "fast"


class SplitParams(Section):
    """Fractions of the images in each split; they must sum to 1."""

    train: Annotated[float, Field(ge=0.0, le=1.0)] = 0.8
    val: Annotated[float, Field(ge=0.0, le=1.0)] = 0.1
    test: Annotated[float, Field(ge=0.0, le=1.0)] = 0.1

    @model_validator(mode="after")
    def _sum_to_one(self) -> "SplitParams":
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(
                f"split ratios train + val + test must sum to 1, got train={self.train:g} + "
                f"val={self.val:g} + test={self.test:g} = {total:.6g}")
        return self


class CurateParams(Section):
    out_dir: str = "data/curated"
    report_dir: str = "reports/curation"
    # Human review decisions: <review_dir>/<domain>.csv (toonlab.faces.review_decisions; written by
    # `toonlab review`); a missing file means no decision.
    review_dir: str = "data/review"
    split: SplitParams = SplitParams()
    # Salt of the split hash: change it to draw a different (still deterministic) split.
    salt: str = "toonlab"
    # Thumbnails per contact sheet (larger groups are sampled evenly in file-name order).
    contact_sheet_max: Annotated[int, Field(ge=1, le=10000)] = 48
    # Side of the square thumbnails, pixels.
    thumb_px: Annotated[int, Field(ge=16, le=1024)] = 96


class PackParams(Section):
    out_dir: str = "data/packed"
    # Crop sizes to pack (the face stage writes 128 and 256 px crops).
    crop_px: Annotated[list[Literal[128, 256]], Field(min_length=1)] = [128, 256]

