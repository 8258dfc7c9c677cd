"""`run:` section: where the run folder lives and how it is named."""

from __future__ import annotations

from pydantic import Field, field_validator

from longctx_core.config.base import Section


class RunConfig(Section):
    name: str = Field("demo", description="Run name; the run folder is <storage_path>/<name>/.")
    storage_path: str = Field(
        "runs",
        description="Folder holding run folders: a local path on a laptop, a shared filesystem mount "
        "(NFS/EFS/Filestore) on a cluster. Relative paths resolve against the working directory.",
    )
    seed: int = Field(0, description="Global seed: data synthesis, shuffling, LoRA init.")
    log_level: str = Field("INFO", description="Python logging level for the entrypoints.")
    force: bool = Field(
        False, description="Re-run stages whose outputs already exist (pipeline skips them otherwise)."
    )

    @field_validator("name")
    @classmethod
    def _name_is_a_folder_name(cls, v: str) -> str:
        if not v or "/" in v or v in (".", ".."):
            raise ValueError("must be a plain folder name (no '/')")
        return v

    @field_validator("log_level")
    @classmethod
    def _level(cls, v: str) -> str:
        levels = ("DEBUG", "INFO", "WARNING", "ERROR")
        if v.upper() not in levels:
            raise ValueError(f"must be one of {levels}")
        return v.upper()
