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
    shared_storage: list[str] = Field(
        default_factory=list,
        description="Absolute folders every node of the cluster mounts at the same path (NFS/EFS/Filestore; "
        "the simulated cluster's runs folder). On a multi-node cluster storage_path must lie under one of "
        "them, under a mount the launcher YAML declares, or be a URI such as s3://... "
        "(longctx_core/runner/cluster_checks.py, run by submit.py --cluster-yaml and make cluster-sim).",
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

    @field_validator("shared_storage")
    @classmethod
    def _absolute_mounts(cls, v: list[str]) -> list[str]:
        relative = [m for m in v if not m.startswith("/")]
        if relative:
            raise ValueError(f"must be absolute folders, got {relative}")
        return [m.rstrip("/") or "/" for m in v]

    @field_validator("log_level")
    @classmethod
    def _level(cls, v: str) -> str:
        levels = ("DEBUG", "INFO", "WARNING", "ERROR")
        if v.upper() not in levels:
            raise ValueError(f"must be one of {levels}")
        return v.upper()
