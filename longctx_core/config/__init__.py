"""The typed config: one schema (`run`, `model`, `data`, `train`, `eval`), YAML presets, dotted overrides.

    cfg = load_config("ray_jobs/configs/demo_cpu.yaml", ["train.max_steps=5"])

Everything here runs before `ray.init()`: an unknown key, a wrong type or a contradictory pair of values
raises `ConfigError` whose message is one line naming the full key path.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, model_validator

from longctx_core.config.base import Section
from longctx_core.config.data import DataConfig
from longctx_core.config.eval import EvalConfig
from longctx_core.config.model import (
    TINY,
    LoraConfig,
    ModelConfig,
    QuantizationConfig,
    RopeConfig,
    TinyModelConfig,
)
from longctx_core.config.run import RunConfig
from longctx_core.config.sources import PretrainConfig, SourceConfig
from longctx_core.config.train import TrainConfig

__all__ = [
    "TINY",
    "Config",
    "ConfigError",
    "DataConfig",
    "EvalConfig",
    "LoraConfig",
    "ModelConfig",
    "PretrainConfig",
    "QuantizationConfig",
    "RopeConfig",
    "RunConfig",
    "SourceConfig",
    "TinyModelConfig",
    "TrainConfig",
    "apply_overrides",
    "load_config",
    "run_dir",
]


class ConfigError(ValueError):
    """A config problem, stated in one line with the key path."""


class Config(Section):
    run: RunConfig = Field(default_factory=RunConfig, description="Run name, storage, seed.")
    model: ModelConfig = Field(default_factory=ModelConfig, description="Checkpoint, RoPE, QLoRA.")
    data: DataConfig = Field(default_factory=DataConfig, description="Sample synthesis.")
    train: TrainConfig = Field(default_factory=TrainConfig, description="Fine-tuning on Ray Train.")
    eval: EvalConfig = Field(default_factory=EvalConfig, description="Evaluation.")
    pretrain: PretrainConfig = Field(
        default_factory=PretrainConfig,
        description="Optional first stage: continued pre-training on raw text, then SFT from its adapter.",
    )

    @model_validator(mode="after")
    def _cross_section(self) -> Config:
        from longctx_core.config.checks import cross_section_checks

        cross_section_checks(self)
        return self

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


def _all_key_paths(model_cls: type[Section], prefix: str = "") -> list[str]:
    paths = []
    for name, field in model_cls.model_fields.items():
        path = f"{prefix}{name}"
        paths.append(path)
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, Section):
            paths.extend(_all_key_paths(ann, path + "."))
    return paths


def _closest(path: str, schema: type[Config]) -> str:
    candidates = _all_key_paths(schema)
    match = difflib.get_close_matches(path, candidates, n=1, cutoff=0.6)
    if not match:  # a typo in the last component: compare leaf names within the same parent
        parent, _, leaf = path.rpartition(".")
        siblings = [c for c in candidates if c.rpartition(".")[0] == parent]
        leaves = difflib.get_close_matches(leaf, [s.rpartition(".")[2] for s in siblings], n=1, cutoff=0.5)
        match = [f"{parent}.{leaves[0]}" if parent else leaves[0]] if leaves else []
    return f" (did you mean '{match[0]}'?)" if match else ""


def _format_error(err: ValidationError, schema: type[Config]) -> str:
    first = err.errors()[0]
    path = ".".join(str(p) for p in first["loc"])
    if first["type"] == "extra_forbidden":
        return f"unknown config key '{path}'{_closest(path, schema)}"
    msg = first["msg"].removeprefix("Value error, ")
    # Validators state the offending key relative to where they run: "sub.key: reason".
    rel = re.match(r"^([A-Za-z_][\w.]*): (.*)$", msg)
    if rel:
        full = f"{path}.{rel.group(1)}" if path else rel.group(1)
        return f"{full}: {rel.group(2)}"
    if not path:
        return msg
    got = first.get("input")
    got_s = "" if isinstance(got, (dict, list)) or got is None else f" (got {got!r})"
    return f"{path}: {msg}{got_s}"


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for i, key in enumerate(keys[:-1]):
        nxt = node.setdefault(key, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"override '{dotted}': '{'.'.join(keys[: i + 1])}' is not a section")
        node = nxt
    node[keys[-1]] = value


def apply_overrides(tree: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Apply `a.b.c=value` strings to a nested dict; values parse as YAML (`5`, `true`, `[a, b]`, `null`)."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override '{item}' is not of the form dotted.key=value")
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"override '{item}': value is not valid YAML ({exc.problem})") from None
        _set_dotted(tree, key.strip(), value)
    return tree


def config_from_dict(tree: dict[str, Any], schema: type[Config] = Config) -> Config:
    """Validate a config tree as `schema` (a subclass adds sections: the toy reproduction's `repro:`)."""
    try:
        return schema.model_validate(tree)
    except ValidationError as err:
        raise ConfigError(_format_error(err, schema)) from None


def load_config(
    path: str | Path | None = None, overrides: Iterable[str] = (), schema: type[Config] = Config
) -> Config:
    """Read a YAML preset (or none: all defaults), apply dotted overrides, validate as `schema`. Raises
    ConfigError."""
    tree: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        try:
            tree = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{p}: not valid YAML: {str(exc).splitlines()[0]}") from None
        if not isinstance(tree, dict):
            raise ConfigError(f"{p}: top level must be a mapping of sections")
    return config_from_dict(apply_overrides(tree, overrides), schema)


def run_dir(cfg: Config) -> Path:
    """The run folder, `<run.storage_path>/<run.name>/` (absolute)."""
    return (Path(cfg.run.storage_path).expanduser() / cfg.run.name).resolve()
