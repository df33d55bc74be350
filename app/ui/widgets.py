"""Widgets every tab shares: concept dropdowns, layer and strength sliders, input checks, and their refresh.

Handlers here are plain functions (values in, updates out), so they are unit-tested without a
server; tabs only lay them out and bind them. Limits come from app.domain.limits.
"""

from __future__ import annotations

import math
import re
from typing import Any, Optional

import gradio as gr

from app.domain import limits
from app.types import GenerationParams

MAX_TOKENS_UI = limits.MAX_TOKENS
DEFAULT_MAX_TOKENS = limits.DEFAULT_MAX_TOKENS
REL_RANGE = limits.STRENGTH_LIMITS["relative"]
ABS_RANGE = limits.STRENGTH_LIMITS["absolute"]
DEFAULT_REL_STRENGTH = limits.DEFAULT_STRENGTH["relative"]
DEFAULT_ABS_STRENGTH = limits.DEFAULT_STRENGTH["absolute"]

# Every concept list of the page, refreshed together on each library change; mixer rows offer "(none)".
CONCEPT_LISTS = ("playground.concept", "playground.condition", "sweeps.concept", "explorer.concept", "explorer.cos_a", "explorer.cos_b",
                 "mixer.concept_1", "mixer.concept_2", "mixer.concept_3", "mixer.concept_4", "mixer.project_out")
_WITH_NONE = ("mixer.", "explorer.concept", "playground.condition")


# ---- the library, the model ---------------------------------------------------------------------
def num_layers(service: Any, default: int = 30) -> int:
    try:
        return int(service.info().num_layers) if service.is_loaded else default
    except Exception:
        return default


def default_layer(n_layers: int) -> int:
    return min(n_layers - 1, max(0, round(n_layers * 0.4)))


def concept_choices(service: Any) -> list[tuple[str, str]]:
    """(label, slug) pairs for concept dropdowns; an unreadable library gives an empty list."""
    try:
        items = service.concepts.list()
    except Exception:
        return []
    return [(f"{s.slug} — {s.name}" if s.name and s.name.lower() != s.slug else s.slug, s.slug) for s in items]


def concept_slugs(service: Any) -> list[str]:
    return [slug for _, slug in concept_choices(service)]


def default_concept(service: Any) -> Optional[str]:
    slugs = concept_slugs(service)
    return "happy" if "happy" in slugs else (slugs[0] if slugs else None)


def concept_list_updates(service: Any, keys: list[str]) -> list[Any]:
    """New choices for each concept list named in ``keys`` (values are kept by Gradio)."""
    choices = concept_choices(service)
    out = []
    for key in keys:
        extra = [("(none)", "")] if key.startswith(_WITH_NONE) else []
        out.append(gr.Dropdown(choices=extra + choices))
    return out


def refresh_concept_lists_on(ctx: Any, service: Any, events: list[Any]) -> None:
    """After each event in ``events`` (a save, rename, delete, import, model load), refresh every concept list."""
    keys = [k for k in CONCEPT_LISTS if k in ctx.components]
    if not keys:
        return

    def refresh():
        return concept_list_updates(service, keys)

    targets = [ctx.components[k] for k in keys]
    for event in events:
        event.then(refresh, None, targets, api_visibility="private", queue=False, show_progress="hidden")
    if ctx.tabs is not None:  # also when a tab is opened: another browser tab may have changed the library
        ctx.tabs.select(refresh, None, targets, api_visibility="private", queue=False, show_progress="hidden")


# ---- strength -------------------------------------------------------------------------------------
def strength_info(absolute: bool) -> str:
    lim = ABS_RANGE if absolute else REL_RANGE
    return (f"Absolute: multiplies the raw concept vector (-{lim:g} to {lim:g})" if absolute
            else f"Relative to the layer's typical residual norm (-{lim:g} to {lim:g})")


def strength_slider(absolute: bool, value: Optional[float] = None, info: Optional[str] = None) -> Any:
    """The strength slider narrowed to one mode's range; a value outside it is clamped and the info says so."""
    lim = ABS_RANGE if absolute else REL_RANGE
    if value is None:
        value = DEFAULT_ABS_STRENGTH if absolute else DEFAULT_REL_STRENGTH
    clamped = max(-lim, min(lim, float(value)))
    note = info or strength_info(absolute)
    if clamped != float(value):
        note = f"{float(value):g} is outside -{lim:g}..{lim:g}: set to {clamped:g}. " + note
    return gr.Slider(minimum=-lim, maximum=lim, value=clamped, info=note)


def recommended(service: Any, concept: str) -> tuple[int, float, bool, str]:
    """(layer, strength, relative, slider note) of ``concept``'s recommended setting on the loaded model, the
    layer kept inside the model; raises what resolving the concept raises (e.g. a half-typed mix)."""
    cv, label = service.resolve_vectors(concept)
    layer, strength, relative, source = service.recommended_setting(concept, cv)
    layer = min(max(int(layer), 0), num_layers(service) - 1)
    return layer, float(strength), bool(relative), recommended_note(label, layer, service.recommended_band(concept),
                                                                    source)


def recommended_updates(service: Any, concept: Any, layer: Any = None) -> tuple[Any, Any, Any]:
    """(layer, strength, absolute) updates that move the sliders to ``concept``'s recommended setting."""
    from app.errors import LabError

    concept = check_concept(concept)
    try:
        rec_layer, rec_strength, relative, note = recommended(service, concept)
    except (LabError, ValueError) as exc:  # e.g. a half-typed mix: say so, keep the sliders as they are
        gr.Warning(f"No recommended setting for {concept!r}: {exc}")
        return gr.update(), gr.update(), gr.update()
    mode = "relative" if relative else "absolute"
    return (gr.Slider(maximum=num_layers(service) - 1, value=rec_layer, info=note),
            strength_slider(not relative, rec_strength, f"★ recommended strength {rec_strength:g} ({mode})"),
            gr.Checkbox(value=not relative))


def recommended_note(label: str, layer: int, band: Any, source: str) -> str:
    """The layer slider's note for a recommended setting (picked in the playground or opened from a link)."""
    where = (f"layer {layer} plus layers {', '.join(map(str, band))} at the same strength (Advanced → Extra layers)"
             if band else f"layer {layer}")
    return f"★ recommended for {label}: {where} — {source}"


def band_text(service: Any, concept: Any) -> str:
    """The playground's extra-layers text for ``concept``'s recommended band ('8:0.08, 10:0.08'), '' without one."""
    from app.errors import LabError

    if not isinstance(concept, str) or not concept.strip():
        return ""
    try:
        plan = service.recommended_band_plan(concept.strip())
    except LabError:
        return ""
    return ", ".join(f"{l}:{float(st):g}" for l, st in plan)


# ---- checks (a gr.Error that names the field) --------------------------------------------------------
def check_prompt(prompt: Any) -> str:
    if not isinstance(prompt, str) or not prompt.strip():
        raise gr.Error("Write a prompt first: the model needs something to answer.", print_exception=False)
    return prompt


def check_concept(concept: Any) -> str:
    if not isinstance(concept, str) or not concept.strip():
        raise gr.Error("Choose a concept (or type a mix like happy:0.7, excited:0.3).", print_exception=False)
    return concept.strip()


def check_number(value: Any, what: str, lo: float, hi: float, integer: bool = False) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise gr.Error(f"{what} must be a number, got {value!r}.", print_exception=False) from None
    if not math.isfinite(v):
        raise gr.Error(f"{what} must be a finite number, got {value!r}.", print_exception=False)
    if integer and v != int(v):
        raise gr.Error(f"{what} must be a whole number, got {value!r}.", print_exception=False)
    if not lo <= v <= hi:
        lo_s, hi_s = (f"{int(lo)}", f"{int(hi)}") if integer else (f"{lo:g}", f"{hi:g}")
        raise gr.Error(f"{what} must be between {lo_s} and {hi_s}, got {v:g}.", print_exception=False)
    return int(v) if integer else v


def check_layer(service: Any, layer: Any, what: str = "layer") -> int:
    n = num_layers(service)
    return int(check_number(layer, what, 0, n - 1, integer=True))


def gen_params(max_tokens: Any, temperature: Any = 0.0, top_p: Any = 1.0, seed: Any = 0,
               repetition_penalty: Any = 1.0) -> GenerationParams:
    return GenerationParams(
        max_tokens=int(check_number(max_tokens, "max tokens", 1, MAX_TOKENS_UI, integer=True)),
        temperature=float(check_number(temperature, "temperature", 0.0, limits.TEMPERATURE_MAX)),
        top_p=float(check_number(top_p, "top-p", limits.TOP_P_MIN, 1.0)),
        seed=int(check_number(seed if seed not in (None, "") else 0, "seed", 0, limits.SEED_MAX, integer=True)),
        repetition_penalty=float(check_number(repetition_penalty if repetition_penalty not in (None, "") else 1.0,
                                              "repetition penalty", 1.0, limits.REPETITION_PENALTY_MAX)),
    )


def file_stem(text: str) -> str:
    """A safe file-name part for downloads ('happy:0.7, sad' -> 'happy-0-7-sad')."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40] or "run"


# ---- stale results ----------------------------------------------------------------------------------
def _js_classes(ids: list[str], add: bool) -> str:
    """Mark (or unmark) the result elements; only those that show a result (tokens, a chart, a table row)."""
    sel = ", ".join(f"#{i}" for i in ids)
    if not add:
        return f"(...a) => {{ document.querySelectorAll('{sel}').forEach(e => e.classList.remove('stale', 'stale-model')); }}"
    shown = "e.querySelector('.tok, .js-plotly-plot .main-svg, tbody td')"
    return (f"(...a) => {{ document.querySelectorAll('{sel}').forEach(e => {{ "
            f"if ({shown} && !e.querySelector('.pane-empty')) e.classList.add('stale'); }}); }}")


def mark_stale_on(inputs: list[Any], result_ids: list[str], runs: list[Any]) -> None:
    """Grey out results when an input changes after a run (browser-side only); a new run clears the mark."""
    for comp in inputs:
        comp.change(None, None, None, js=_js_classes(result_ids, True), queue=False, show_progress="hidden")
    for btn in runs:
        btn.click(None, None, None, js=_js_classes(result_ids, False), queue=False, show_progress="hidden")
