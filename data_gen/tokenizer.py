"""The tokenizer synthesis and import count tokens and render chat templates with.

tok = chat_tokenizer(tokenizer_path(cfg))     # a path, so Ray actors can load it themselves
"""

from __future__ import annotations

from longctx_core.errors import LongctxError


def tokenizer_path(cfg) -> str:
    """Where the synthesis tokenizer loads from: `model.tokenizer`, else the folder the model loads from
    (`model.loading.resolve_model_path`: the tiny checkpoint, an embedded model or a .gguf file's converted
    folder, a local folder or a hub name)."""
    from longctx_core.model.loading import resolve_model_path

    return cfg.model.tokenizer or resolve_model_path(cfg.model)


def chat_tokenizer(path: str):
    """The tokenizer samples are counted and rendered with (`model.loading.tokenizer_from_path`); a tokenizer that does not load or has no chat
    template is a `LongctxError` (user-fixable)."""
    from longctx_core.model.loading import tokenizer_from_path

    tok = tokenizer_from_path(path)
    if not getattr(tok, "chat_template", None):
        raise LongctxError(f"tokenizer at {path!r} has no chat template (use a chat/instruct checkpoint)")
    return tok
