"""Chat formatting and tokenization with the model's own template."""

from __future__ import annotations

from typing import Any, Optional


def format_chat(tokenizer: Any, user: str, system: Optional[str] = None) -> str:
    """Wrap a user message (and optional system prompt) in the model's chat template."""
    messages = []
    if system:
        messages.append({"role": "system", "content": system})
    messages.append({"role": "user", "content": user})
    template = getattr(tokenizer, "chat_template", None)
    if not template:
        prefix = f"{system}\n\n" if system else ""
        return f"{prefix}User: {user}\nAssistant:"
    try:
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    except Exception:
        if not system:
            raise
        # Some templates (e.g. Gemma) reject a system role: fold it into the user turn.
        merged = [{"role": "user", "content": f"{system}\n\n{user}"}]
        return tokenizer.apply_chat_template(merged, add_generation_prompt=True, tokenize=False)


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
