"""ToonLab: from raw face-photo and anime crawls to trained portrait-to-anime GANs."""

import os as _os

# albumentations checks PyPI for updates at import time unless told not to.
_os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")



def _version() -> str:
    """The installed distribution's version (pyproject.toml is the one place it is written)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("toonlab")
    except PackageNotFoundError:  # imported from a source tree that was never installed
        return "0+unknown"


__version__ = _version()
