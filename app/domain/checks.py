"""The lab's checks of free text and sampling settings, shared by the UI, the CLI, the service and the core.

Each is the one place its rule lives: a prompt from a text box, an argv string or an API call
meets the same limits and the same message (numpy-free, no MLX, no Gradio).
"""

from __future__ import annotations

import math
from typing import Sequence

from app.domain import limits
from app.errors import InputError
from app.types import GenerationParams


def validate_text(text: str, what: str = "prompt") -> str:
    """A prompt-like text: non-empty, at most ``limits.PROMPT_CHARS``, valid UTF-8, no control characters."""
    if not isinstance(text, str):
        raise InputError(f"{what} must be text")
    if not text.strip():
        raise InputError(f"{what} is empty")
    if len(text) > limits.PROMPT_CHARS:
        raise InputError(f"{what} is too long: {len(text)} characters (at most {limits.PROMPT_CHARS})")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InputError(f"{what} contains invalid characters (unpaired surrogates)") from exc
    bad = sorted({f"U+{ord(c):04X}" for c in text if (ord(c) < 32 and c not in "\n\t\r") or 0x7F <= ord(c) < 0xA0})
    if bad:
        raise InputError(f"{what} contains control characters ({', '.join(bad[:5])}); remove them")
    return text


def validate_prompts(prompts: Sequence[str], what: str = "prompt") -> None:
    if not prompts:
        raise InputError(f"no {what}s given")
    if len(prompts) > limits.PROMPTS_PER_CALL:
        raise InputError(f"too many {what}s: {len(prompts)} (at most {limits.PROMPTS_PER_CALL})")
    for i, p in enumerate(prompts):
        validate_text(p, f"{what} {i + 1}")


def validate_params(p: GenerationParams) -> GenerationParams:
    """Sampling settings inside ``limits`` (max tokens, temperature, top-p, seed, repetition penalty), or an error naming the field."""
    if not isinstance(p.max_tokens, int) or isinstance(p.max_tokens, bool) or not 1 <= p.max_tokens <= limits.MAX_TOKENS:
        raise InputError(f"max tokens must be a whole number from 1 to {limits.MAX_TOKENS}, got {p.max_tokens!r}")
    if not isinstance(p.temperature, (int, float)) or not math.isfinite(p.temperature) or not 0 <= p.temperature <= limits.TEMPERATURE_MAX:
        raise InputError(f"temperature must be between 0 and {limits.TEMPERATURE_MAX:g}, got {p.temperature!r}")
    if not isinstance(p.top_p, (int, float)) or not math.isfinite(p.top_p) or not 0 < p.top_p <= 1:
        raise InputError(f"top-p must be in (0, 1], got {p.top_p!r}")
    if not isinstance(p.seed, int) or isinstance(p.seed, bool) or not 0 <= p.seed <= limits.SEED_MAX:
        raise InputError(f"seed must be a whole number from 0 to 2^32-1, got {p.seed!r}")
    rp = p.repetition_penalty
    if (not isinstance(rp, (int, float)) or isinstance(rp, bool) or not math.isfinite(rp)
            or not 1.0 <= rp <= limits.REPETITION_PENALTY_MAX):
        raise InputError(f"repetition penalty must be between 1 (off) and {limits.REPETITION_PENALTY_MAX:g}, got {rp!r}")
    return p
