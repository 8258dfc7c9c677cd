"""Cross-section checks: contradictions between fields of different sections, named by key path.

Each check raises ValueError("<key.path>: <reason>"); `Config` turns it into a one-line ConfigError.
Section-local checks live in the section's own validators.
"""

from __future__ import annotations

from longctx_core.config.sources import check_objectives


def cross_section_checks(cfg) -> None:
    """`cfg`: the whole `Config`, once each section has validated itself."""
    hi = cfg.data.target_bounds()[1]
    # Imported chat/text rows have no target length (overlong ones follow train.overlong).
    if hi > cfg.train.max_seq_len and cfg.data.source.kind not in ("chat", "text"):
        raise ValueError(
            f"data.target_tokens: largest target {hi} exceeds train.max_seq_len {cfg.train.max_seq_len} "
            "(samples must fit the training length)"
        )
    if not cfg.train.use_gpu and cfg.model.torch_dtype == "float16":
        raise ValueError(
            "model.torch_dtype: float16 is not supported on CPU workers (train.use_gpu is false)"
        )
    if cfg.model.attn_implementation == "flash_attention_2" and not cfg.train.use_gpu:
        raise ValueError("model.attn_implementation: flash_attention_2 needs train.use_gpu=true")
    check_objectives(cfg)
