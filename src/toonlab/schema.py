"""Base class of every params section (kept apart from params.py so that stage modules
can define their own section without importing the whole schema)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

# DVC leaves parameters with these names out of its run-cache key (treeverse/dvc#10296).
FORBIDDEN_NAMES = {"size", "nfiles"}


class Section(BaseModel):
    """Base of every params section: unknown keys are errors, no silent coercion."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        bad = FORBIDDEN_NAMES & set(getattr(cls, "__annotations__", {}))
        if bad:
            raise TypeError(f"{cls.__name__}: parameter names {sorted(bad)} break DVC's run cache")
