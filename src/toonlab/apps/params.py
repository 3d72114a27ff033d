"""The params.yaml section of the local web page (`serve`) and the settings of
`toonlab cartoonize`. Light: pydantic only."""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Literal

from pydantic import Field, field_validator

from toonlab.schema import Section

UPLOAD_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF")


class ServeParams(Section):
    """The local web page: address, upload limits and the runs it offers."""

    host: str = "127.0.0.1"
    # Host names (or addresses) requests may name besides the loopback names and `host`
    # (both pages refuse others: DNS rebinding), e.g. the machine's name on the network.
    allowed_hosts: list[str] = []
    port: Annotated[int, Field(ge=0, le=65535)] = 8000       # 0: any free port (the URL is printed)
    max_upload_mb: Annotated[float, Field(gt=0.0, le=1024.0)] = 15.0
    max_pixels: Annotated[int, Field(ge=1)] = 25_000_000      # the lower of this and decode.max_pixels wins
    formats: Annotated[list[Literal[UPLOAD_FORMATS]], Field(min_length=1)] = ["JPEG", "PNG", "WEBP"]  # type: ignore[valid-type]
    runs: list[str] = []          # offered runs; empty: every trained run under train.out_dir that translates photos
    max_loaded: Annotated[int, Field(ge=1, le=16)] = 2        # runs kept in memory (least recently used dropped)
    # MiB of parameters + buffers of the loaded runs: the least recently used runs are
    # dropped until a new one fits (a larger run still loads, alone, with a warning).
    max_loaded_mb: Annotated[float, Field(gt=0.0, le=1_048_576.0)] = 1024.0
    # Uploads in flight (body being read, waiting or being cartoonized); one more is
    # answered 503 with Retry-After before its body is read.
    max_concurrent_uploads: Annotated[int, Field(ge=1, le=1024)] = 4
    # A whole upload body must arrive within upload_timeout_s, and some byte within every
    # idle_timeout_s (which also bounds a request head): else 408 and the connection closed.
    upload_timeout_s: Annotated[float, Field(gt=0.0, le=3600.0)] = 180.0
    idle_timeout_s: Annotated[float, Field(gt=0.0, le=3600.0)] = 30.0
    max_connections: Annotated[int, Field(ge=1, le=100_000)] = 100   # uvicorn limit_concurrency: beyond, 503
    display_px: Annotated[int, Field(ge=64, le=8192)] = 1600  # long side of the images sent back to the page

    @field_validator("allowed_hosts")
    @classmethod
    def _hosts(cls, value: list[str]) -> list[str]:
        out = []
        for item in value:
            text = item.strip().lower().removeprefix("[").removesuffix("]")
            try:
                ipaddress.ip_address(text)
            except ValueError:
                if not re.fullmatch(r"[a-z0-9_]([a-z0-9._-]*[a-z0-9])?", text):
                    raise ValueError(f"{item!r} is not a host name or an address (no scheme, port or path: "
                                     "e.g. mybox.lan or 192.168.1.20)") from None
            out.append(text)
        return out


class CartoonizeParams(Section):
    """How faces are chosen, translated and pasted back."""

    faces: Literal["all", "largest"] = "all"
    paste_back: bool = False
    matte: bool = False     # blend mask (paste-back) or crop alpha times the background matte
    # Feather of the paste-back mask: Gaussian sigma as a fraction of the face crop's side
    # in photo pixels; the warped crop region is first eroded by ceil(3 sigma) + 1 px so
    # the blurred mask stays inside it.
    feather: Annotated[float, Field(ge=0.0, le=0.1)] = 0.03
    batch_faces: Annotated[int, Field(ge=1, le=256)] = 16   # faces per forward pass

