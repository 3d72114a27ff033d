"""The params.yaml sections of the raw-data stages (demo, crawl, decode, ingest). Light:
pydantic only, so the configuration loads without the stages' heavy imports."""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Literal

from pydantic import Field, field_validator

from toonlab.schema import Section


class DataParams(Section):
    # Where raw crawls live, one sub-folder per domain (photo/, anime/).
    raw_dir: str = "data/raw"
    # demo: raw_dir is written by `toonlab demo-data`; crawl: fetched from URL lists by
    # `toonlab crawl`; folder: your own files, put there by hand.
    source: Literal["demo", "crawl", "folder"] = "demo"
    domains: Annotated[list[Literal["photo", "anime"]], Field(min_length=1)] = ["photo", "anime"]


class DemoParams(Section):
    seed: Annotated[int, Field(ge=0)] = 0
    # Generated variants of each real photo shipped inside installed packages.
    variants_per_photo: Annotated[int, Field(ge=1, le=100)] = 8
    # Procedurally drawn anime-style portraits.
    anime_count: Annotated[int, Field(ge=1, le=10000)] = 24
    anime_px: Annotated[int, Field(ge=64, le=2048)] = 512
    # Longest side of the photo variants.
    photo_max_px: Annotated[int, Field(ge=64, le=4096)] = 640
    # Add what real crawls contain: exact and near duplicates, a truncated JPEG, a non-image.
    messy: bool = True


class CrawlParams(Section):
    # URL list files or folders of .txt/.csv lists.
    url_lists: Annotated[list[str], Field(min_length=1)] = ["data/urls"]
    concurrency: Annotated[int, Field(ge=1, le=256)] = 4
    # Maximum requests per second to one host (host:port), shared by all threads.
    per_host_rate: Annotated[float, Field(gt=0)] = 2.0
    # Socket timeout for connecting and for each read.
    timeout_s: Annotated[float, Field(gt=0)] = 20.0
    # Deadline for one URL: every attempt, redirect and retry wait (Retry-After included).
    total_timeout_s: Annotated[float, Field(gt=0)] = 120.0
    retries: Annotated[int, Field(ge=0, le=20)] = 3
    # First retry waits backoff_s, then 2x, 4x, ...
    backoff_s: Annotated[float, Field(ge=0)] = 0.5
    max_bytes: Annotated[int, Field(ge=1)] = 20 * 1024 * 1024
    max_redirects: Annotated[int, Field(ge=0, le=50)] = 5
    user_agent: Annotated[str, Field(min_length=1)] = "toonlab-crawler/0.1 (+research dataset builder)"
    # Domain of URLs whose list gives none (text lists, CSV without a domain column).
    default_domain: Literal["photo", "anime"] = "photo"
    # Address policy: hosts that resolve to loopback, private, link-local, multicast,
    # unspecified or other non-global addresses are refused (checked on the address actually
    # connected to, for every redirect hop). True allows them (a crawl of your own network).
    allow_private: bool = False
    # Exceptions to the policy: host names (exact, e.g. "nas.local") or networks in CIDR
    # form (e.g. "10.0.0.0/8", "192.168.1.20").
    allow_hosts: list[str] = []

    @field_validator("allow_hosts")
    @classmethod
    def _hosts(cls, value: list[str]) -> list[str]:
        out = []
        for item in value:
            text = item.strip().lower()
            if not text:
                raise ValueError("an empty entry")
            if any(c in text for c in "/:") or text.replace(".", "").isdigit():
                try:
                    ipaddress.ip_network(text, strict=False)
                except ValueError:
                    raise ValueError(f"{item!r} is neither a host name nor an address/network (CIDR)") from None
            elif not re.fullmatch(r"[a-z0-9.\-_]+", text):
                raise ValueError(f"{item!r} is neither a host name nor an address/network (CIDR)")
            out.append(text)
        return out


class DecodeParams(Section):
    # Refuse images whose declared width*height exceeds this, before decoding any pixel.
    max_pixels: Annotated[int, Field(ge=1)] = 40_000_000
    # Refuse images whose shorter side is below this many pixels.
    min_side: Annotated[int, Field(ge=1)] = 64
    # Refuse images whose long side / short side exceeds this.
    max_aspect: Annotated[float, Field(ge=1.0)] = 3.0
    # RGB colour that transparent pixels are composited over.
    background: Annotated[list[Annotated[int, Field(ge=0, le=255)]], Field(min_length=3, max_length=3)] = [255, 255, 255]
    # True: keep the first frame of an animation and flag it; False: reject it.
    allow_animated: bool = True


class IngestParams(Section):
    out_dir: str = "data/interim"
    # Per-content results, so re-runs only process new files. Outside DVC outputs.
    cache_dir: str = ".toonlab-cache/ingest"
    near_duplicates: bool = True
    # Max Hamming distance (of 64 bits) between perceptual hashes of near duplicates.
    phash_threshold: Annotated[int, Field(ge=0, le=16)] = 4
    # Larger files are rejected (`too_large`) without being read.
    max_file_mb: Annotated[float, Field(gt=0)] = 200
