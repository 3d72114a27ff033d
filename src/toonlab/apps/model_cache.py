"""The runs `toonlab serve` keeps in memory: at most `serve.max_loaded` of them and
`serve.max_loaded_mb` MiB of their parameters and buffers, the least recently used
dropped first. A run larger than the whole budget still loads, alone, with a warning.

`ModelCache` is not thread-safe: its owner serialises the calls (`toonlab serve` holds
one lock around every use of its runs).
"""

from __future__ import annotations

import itertools
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from toonlab.apps.params import ServeParams
from toonlab.log import get_logger

log = get_logger(__name__)


class ModelCache:
    """Loaded models by name, least recently used first, within the budget of `settings`.

    `load(name)` returns (the model, its parameter + buffer bytes); a model has `close()`,
    called when it is dropped. `label(name)` names a run in the log."""

    def __init__(self, settings: ServeParams, load: Callable[[str], tuple[Any, int]],
                 label: Callable[[str], str] = str):
        self.settings = settings
        self._load, self._label = load, label
        self._loaded: OrderedDict[str, tuple[Any, int]] = OrderedDict()   # name -> (model, bytes)
        self._sizes: dict[str, int] = {}      # bytes of every run loaded once (to make room before reloading)

    @property
    def max_bytes(self) -> int:
        return int(self.settings.max_loaded_mb * 2**20)

    def sizes(self) -> dict[str, int]:
        """The runs in memory, least recently used first: name -> parameter + buffer bytes."""
        return {name: size for name, (_, size) in self._loaded.items()}

    def get(self, name: str) -> Any:
        """The loaded model; the least recently used ones are dropped beyond max_loaded runs
        or max_loaded_mb MiB."""
        if name in self._loaded:
            self._loaded.move_to_end(name)
            return self._loaded[name][0]
        # Room first when the run's size is known (loaded before), so that old and new do not
        # coexist; otherwise room is made as soon as the new run is measured.
        self._make_room(self._sizes.get(name, 0))
        t0 = time.perf_counter()
        model, size = self._load(name)
        self._sizes[name] = size
        if size > self.max_bytes:
            log.warning("serve: run %s needs %.1f MiB of parameters and buffers, more than serve.max_loaded_mb "
                        "(%g MiB): it is loaded alone", name, size / 2**20, self.settings.max_loaded_mb)
        self._make_room(size)
        self._loaded[name] = (model, size)
        log.info("serve: loaded %s (%.1f MiB) in %.1f s", self._label(name), size / 2**20, time.perf_counter() - t0)
        return model

    def _make_room(self, incoming: int) -> None:
        """Drop the least recently used runs until one more run of `incoming` bytes fits
        under max_loaded and max_loaded_mb."""
        while self._loaded and (len(self._loaded) + 1 > self.settings.max_loaded
                                or sum(size for _, size in self._loaded.values()) + incoming
                                > self.max_bytes):
            old_name, (old, size) = self._loaded.popitem(last=False)
            old.close()
            log.info("serve: dropped %s from memory (%.1f MiB)", old_name, size / 2**20)

    def clear(self) -> None:
        """Close and drop every loaded model."""
        for model, _ in self._loaded.values():
            model.close()
        self._loaded.clear()


def run_bytes(inf) -> int:
    """Parameter + buffer bytes of a run's inference networks (shared tensors counted once)."""
    import torch

    seen: set[tuple[str, int]] = set()
    total = 0
    for net in (inf.forward, inf.backward, inf.generate):
        if not isinstance(net, torch.nn.Module):
            continue
        for t in itertools.chain(net.parameters(), net.buffers()):
            key = (str(t.device), t.data_ptr())
            if key not in seen:
                seen.add(key)
                total += t.numel() * t.element_size()
    return total
