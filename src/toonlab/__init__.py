"""ToonLab: from raw face-photo and anime crawls to trained portrait-to-anime GANs."""

import os as _os

# albumentations checks PyPI for updates at import time unless told not to.
_os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

__version__ = "0.1.0"
