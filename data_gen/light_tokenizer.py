"""The synthesis actors' tokenizer: the driver's tokenizer shipped as its Rust backend and chat template, so
an actor starts without transformers' tokenizer classes.

An actor needs two things from a tokenizer: exact token counts (`backend_tokenizer.encode`) and the chat
template rendered as text (`apply_chat_template(..., tokenize=False)`). `AutoTokenizer.from_pretrained`
costs ~4.5 s per actor for the Qwen vocabulary on this machine (importing the tokenizer classes, then
rebuilding the backend from the vocabulary and the class's own normalizer and pre-tokenizer: Qwen2Tokenizer
replaces what `tokenizer.json` holds), most of a 96-sample job's start-up. The driver has loaded that
tokenizer already, so it sends `spec_of(tokenizer)`: the backend it actually uses, serialised, its chat
template and named special tokens. `LightTokenizer.from_spec` rebuilds it in ~1 s and renders with the
function `apply_chat_template` itself calls (`render_jinja_template`): the same text, the same counts,
identical rows (tests/data/test_light_tokenizer.py), and a hub name loads once, on the driver.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TokenizerSpec:
    """What an actor needs of the driver's tokenizer (picklable; ~10 MB for the Qwen vocabulary)."""

    backend_json: str  # tokenizers.Tokenizer.to_str() of the backend the full tokenizer encodes with
    chat_template: str
    special_tokens: dict[str, str]  # the named special tokens apply_chat_template gives the template


def spec_of(tokenizer) -> TokenizerSpec:
    """The spec of a loaded fast tokenizer with a chat template (`data_gen.tokenizer.chat_tokenizer`)."""
    template = tokenizer.chat_template
    if not isinstance(template, str):
        raise ValueError("spec_of: the tokenizer has no single chat template to render with")
    return TokenizerSpec(tokenizer.backend_tokenizer.to_str(), template, dict(tokenizer.special_tokens_map))


class LightTokenizer:
    """`backend_tokenizer` (a `tokenizers.Tokenizer`) and `apply_chat_template(messages, tokenize=False)`:
    the part of a `PreTrainedTokenizerFast` that `longctx_core.data.compose` uses."""

    def __init__(self, backend, chat_template: str, special_tokens: dict[str, str]) -> None:
        self.backend_tokenizer = backend
        self.chat_template = chat_template
        self.special_tokens_map = special_tokens

    @classmethod
    def from_spec(cls, spec: TokenizerSpec) -> LightTokenizer:
        from tokenizers import Tokenizer

        return cls(Tokenizer.from_str(spec.backend_json), spec.chat_template, dict(spec.special_tokens))

    def apply_chat_template(
        self, messages: list[dict], tokenize: bool = False, add_generation_prompt: bool = False
    ) -> str:
        """The rendered chat, as `PreTrainedTokenizerBase.apply_chat_template(..., tokenize=False)` gives it
        (messages' None-valued keys dropped, the named special tokens in the template's namespace)."""
        from transformers.utils.chat_template_utils import render_jinja_template

        if tokenize:
            raise ValueError(
                "LightTokenizer renders text only (tokenize=False); count with backend_tokenizer"
            )
        chat = [{k: v for k, v in m.items() if v is not None} for m in messages]
        rendered, _ = render_jinja_template(
            conversations=[chat],
            chat_template=self.chat_template,
            add_generation_prompt=add_generation_prompt,
            **self.special_tokens_map,
        )
        return rendered[0]
