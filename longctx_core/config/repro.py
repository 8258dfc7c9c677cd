"""`repro:` section: the toy-scale reproduction of the method's finding (`make repro`)."""

from __future__ import annotations

from pydantic import Field

from longctx_core.config.base import Section


class ReproConfig(Section):
    only_base: bool = Field(False, description="Build (or reuse) the cached toy base chat model and stop.")
