"""`eval:` section: which evaluation tasks run, on which models, over which grid."""

from __future__ import annotations

from pydantic import Field

from longctx_core.config.base import Section


class EvalConfig(Section):
    num_workers: int = Field(1, ge=1, description="Model actors for batch inference.")
    max_new_tokens: int = Field(64, ge=1, description="Generation budget per reply.")
