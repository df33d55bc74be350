"""Every number limit of the lab, in one place: core, service, UI, URL state and CLI read these.

A limit that two layers disagree on is a bug a user meets as "the same field says two things",
so each quantity has exactly one bound here; the UI's slider ranges are these bounds too.
"""

from __future__ import annotations

from typing import Final

from app.errors import InputError

# ---- text inputs -------------------------------------------------------------------------
PROMPT_CHARS: Final = 8000  # a prompt or system prompt, in characters
URL_PROMPT_CHARS: Final = 2000  # a prompt kept in a shareable link (longer ones stay out of the URL)
PROMPTS_PER_CALL: Final = 512  # prompts in one explore/lens call
PAIR_TEXT_CHARS: Final = 4000  # one side of a contrast pair (the library's field limit too)
PAIRS_PER_CONCEPT: Final = 512

# ---- generation --------------------------------------------------------------------------
MAX_TOKENS: Final = 512  # one side-by-side run (playground, mixer, CLI generate)
DEFAULT_MAX_TOKENS: Final = 80
SWEEP_MAX_TOKENS: Final = 128  # per sweep cell
SWEEP_MIN_TOKENS: Final = 4  # fewer tokens cannot show a loop or a concept
DEFAULT_SWEEP_TOKENS: Final = 32
TEMPERATURE_MAX: Final = 2.0
REPETITION_PENALTY_MAX: Final = 2.0  # 1.0 = off; mlx-lm's multiplicative penalty (CTRL paper)
REPETITION_CONTEXT: Final = 64  # how many previous tokens (prompt tail + answer) the penalty looks at
TOP_P_MIN: Final = 0.05  # the smallest top-p the UI offers; the core accepts any value in (0, 1]
SEED_MAX: Final = 2**32 - 1
SCHEDULE_LENGTH_MAX: Final = 4096

# ---- steering strength, one bound per mode --------------------------------------------------
# relative: 1.0 = a step as long as a typical token's residual vector at that layer, already far
# past where the default model loops (>= 0.5); absolute multiplies the raw vector.
STRENGTH_LIMITS: Final = {"relative": 1.0, "absolute": 8.0}
DEFAULT_STRENGTH: Final = {"relative": 0.3, "absolute": 1.5}
GUIDANCE_LIMIT: Final = 20.0  # logits mode: base + g * (steered - base)
CONDITION_THRESHOLD_LIMIT: Final = 10.0  # conditional steering, x the condition's typical positive projection


# ---- each intervention's parameter: (lowest, highest, default) ------------------------------
# The interventions registry (app.core.interventions.OPS), the CLI's help and the UI's hints read
# these. add: the strength (its mode narrows it, see strength_limit); ablate: the share a of the
# component removed; cap/clamp: t in typical positive projections; rotate: theta in degrees.
OP_PARAMS: Final = {
    "add": (-STRENGTH_LIMITS["absolute"], STRENGTH_LIMITS["absolute"], DEFAULT_STRENGTH["relative"]),
    "ablate": (0.0, 1.0, 1.0),
    "cap": (-10.0, 10.0, 0.5),
    "clamp": (-10.0, 10.0, 1.0),
    "rotate": (-180.0, 180.0, 10.0),
    "logits": (-GUIDANCE_LIMIT, GUIDANCE_LIMIT, 1.0),
}


def op_param_limit(op: str) -> float:
    """The largest |parameter| of operation ``op`` (a list of its values is checked against this first)."""
    if op not in OP_PARAMS:
        raise InputError(f"op must be one of {', '.join(OP_PARAMS)}, got {op!r}")
    lo, hi, _ = OP_PARAMS[op]
    return max(abs(lo), abs(hi))


def strength_limit(relative: bool) -> float:
    """The largest |strength| allowed in this mode."""
    return STRENGTH_LIMITS["relative" if relative else "absolute"]


def mode_name(relative: bool) -> str:
    return "relative" if relative else "absolute"


# ---- sweeps ------------------------------------------------------------------------------
SWEEP_CELLS: Final = 64  # layers x strengths in one sweep
SWEEP_ROWS_PER_BATCH: Final = 24
SWEEP_MEMORY_BYTES: Final = 1_500_000_000

# ---- lists and mixes ---------------------------------------------------------------------
LAYER_LIST_ITEMS: Final = 1024  # a layer list or range expands to at most this many layers
FLOAT_LIST_ITEMS: Final = 64
LIST_TEXT_CHARS: Final = 200  # a layer/strength list typed into a box or a URL
MIX_TERMS: Final = 8
MIX_WEIGHT: Final = 10.0
MIX_TEXT_CHARS: Final = 200
MIX_DEPTH: Final = 8  # mixes of mixes

# ---- files -------------------------------------------------------------------------------
IMPORT_BYTES: Final = 64 * 1024 * 1024  # an uploaded bundle or GGUF
YAML_VALUES: Final = 20_000  # values in one YAML file (a 512-pair concept is ~2,600; a bundle adds ~20 per model)
YAML_DEPTH: Final = 32  # nesting depth of one YAML file
EXTRACT_TOKENS: Final = 32_768  # all prompts of one extraction together: minutes on a laptop CPU, not hours

# ---- token x layer heatmaps ----------------------------------------------------------------
HEATMAP_TOKENS: Final = 40  # tokens shown at once; beyond this a token range is picked
TEXT_IN_CELLS_MAX_TOKENS: Final = 48
