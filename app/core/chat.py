"""Chat formatting (the model's own template, plain text for base models) and tokenization."""

from __future__ import annotations

from typing import Any, Optional

from app.core.family import format_prompt, format_reply_prefix  # noqa: F401 (re-exported)


def format_chat(tokenizer: Any, user: str, system: Optional[str] = None) -> str:
    """The text the model reads: its chat template, or plain text for a base model.

    The family rules (base models, templates without a system role) live in ``app.core.family``.
    """
    return format_prompt(tokenizer, user, system)


def encode(tokenizer: Any, text: str) -> list[int]:
    """Tokenize formatted text without adding a second BOS when the template wrote one."""
    bos = getattr(tokenizer, "bos_token", None)
    add_special = bos is None or not text.startswith(bos)
    return list(tokenizer.encode(text, add_special_tokens=add_special))


def eos_ids(tokenizer: Any) -> set[int]:
    raw = getattr(tokenizer, "eos_token_ids", None)
    ids = {int(raw)} if isinstance(raw, int) else set(raw or [])
    eid = getattr(tokenizer, "eos_token_id", None)
    if eid is not None:
        ids.add(int(eid))
    return ids


def pad_id(tokenizer: Any) -> int:
    for attr in ("pad_token_id", "eos_token_id"):
        v = getattr(tokenizer, attr, None)
        if isinstance(v, int):
            return v
    return 0
