"""Layer explorer: residual norms, the logit lens and concept projections for one prompt."""

from __future__ import annotations

import logging
from typing import Any

import gradio as gr

from app.ui.context import MODEL_CONCURRENCY
from app.ui.errors import error_note, guarded, shows_error
from app.ui.feedback import KEPT_ERROR
from app.ui.present.insight import vector_lens_md
from app.ui.present import explorer as present
from app.ui.present.common import empty_figure
from app.ui import model_follow, widgets

LABEL = "Layer explorer"  # this module is a tab (app.ui.tabs): its title ...
ORDER = 20  # ... and its place on the page

log = logging.getLogger("steering_lab.ui")

DEFAULT_PROMPT = "What is the capital of France?"
INTRO = ("Type a prompt and press **Explore**: the model reads it once and we record the residual stream "
         "(the vector each token carries) after every layer. Pick a concept to also see how strongly each "
         "token points along that concept's steering vector.")


def choices(service: Any, none_label: str | None = None) -> list[tuple[str, str]]:
    """The page's one concept list (app.ui.widgets), with an optional leading '(none)'."""
    return ([(none_label, "")] if none_label else []) + widgets.concept_choices(service)


class ExplorerHandlers:
    """The explorer's events as plain methods over the lab, so tests call them without a server. The last few
    explorations are kept, so paging through tokens does not run the model again (Explore: always fresh)."""

    CACHED = 4

    def __init__(self, service: Any) -> None:
        self.service = service
        self._cache: dict[tuple, Any] = {}

    def _explored(self, prompt: str, concept: Any, chat: bool, fresh: bool = False) -> Any:
        svc = self.service
        key = (svc.info().model_id if svc.is_loaded else "", prompt, concept, chat)
        if fresh or key not in self._cache:
            self._cache.pop(key, None)
            while len(self._cache) >= self.CACHED:
                self._cache.pop(next(iter(self._cache)))
            self._cache[key] = svc.explore(prompt, concept=concept, chat=chat)
        return self._cache[key]

    def explore(self, prompt_v: str, concept_v: str, chat_v: bool, progress=gr.Progress()) -> tuple:
        """(summary, norms, norm heatmap, lens, lens table, projection) for one prompt."""
        if not (prompt_v or "").strip():
            raise gr.Error("Type a prompt to explore first (e.g. “What is the capital of France?”).",
                           print_exception=False)
        slug = (concept_v or "").strip() or None
        progress(0.1, desc="Extracting the concept (if needed) and reading the prompt through every layer…"
                 if slug else "Reading the prompt through every layer…")
        ex = self._explored(prompt_v, slug, bool(chat_v), fresh=True)
        progress(0.9, desc="Drawing")
        lens = vector_lens_md(ex.extra.get("vector_lens"), ex.extra.get("recommended_layers"),
                              f"Vector lens of {slug}") if slug else ""
        start, stop = present.parse_token_range("", len(ex.tokens))
        win = present.token_window(ex, start, stop)
        note = present.window_note(start, stop, len(ex.tokens))
        summary_md = present.explore_summary_md(ex) + (f"  \n{note}" if note else "") + (
            f"\n\n<details><summary>Vector lens of {slug}: what its direction says per layer</summary>\n\n{lens}"
            "\n\n</details>" if lens else "")
        return (summary_md, present.norms_figure(ex), present.norm_heatmap_figure(win), present.lens_figure(win),
                present.lens_last_rows(ex), present.projection_figure(win))

    def show_range(self, prompt_v: str, concept_v: str, chat_v: bool, range_v: str) -> tuple:
        """Redraw the token x layer charts for another window of tokens (the exploration is cached)."""
        if not (prompt_v or "").strip():
            raise gr.Error("Type a prompt and press Explore first.", print_exception=False)
        ex = self._explored(prompt_v, (concept_v or "").strip() or None, bool(chat_v))
        start, stop = present.parse_token_range(range_v, len(ex.tokens))
        win = present.token_window(ex, start, stop)
        return (present.norm_heatmap_figure(win), present.lens_figure(win), present.projection_figure(win),
                gr.update(info=f"showing tokens {start}–{stop - 1} of {len(ex.tokens)}"))

    def cosine(self, a: str, b: str, progress=gr.Progress()) -> tuple:
        a, b = (a or "").strip(), (b or "").strip()
        if not a or not b:
            raise gr.Error("Choose two concepts to compare.", print_exception=False)
        progress(0.05, desc=f"Vectors for {a} (extracted first if needed)…")
        va = self.service.concepts.vectors(a, progress=_stage(progress, 0.0, 0.5, a))
        progress(0.5, desc=f"Vectors for {b} (extracted first if needed)…")
        vb = self.service.concepts.vectors(b, progress=_stage(progress, 0.5, 1.0, b))
        cos = present.cosine_by_layer(va.vectors, vb.vectors)
        return present.cosine_figure(cos, a, b), present.cosine_summary_md(cos, a, b)


# ---- the tab --------------------------------------------------------------------------------
def _prompt_box(service: Any) -> dict:
    with gr.Row(equal_height=False):
        with gr.Column(scale=3, min_width=300):
            prompt = gr.Textbox(label="Prompt", value=DEFAULT_PROMPT, lines=2, max_lines=8, elem_id="ex-prompt",
                                placeholder="e.g. What is the capital of France?")
            _, has_chat, _ = model_follow.model_facts(service)  # a base model reads plain text (follows switches)
            chat = gr.Checkbox(value=has_chat, interactive=has_chat, elem_id="ex-chat",
                               label=model_follow.CHAT_LABEL if has_chat else model_follow.NO_CHAT_LABEL)
        with gr.Column(scale=2, min_width=260):
            concept = gr.Dropdown(choices=choices(service, "(none)"), value="", label="Concept to project on (optional)",
                                  allow_custom_value=True, info="Its vectors are extracted first if this model has none yet",
                                  elem_id="ex-concept")
            run = gr.Button("Explore", variant="primary", elem_id="ex-run")
    summary = gr.Markdown(elem_id="ex-summary", elem_classes=[KEPT_ERROR])
    token_range = gr.Textbox(value="", label="Tokens shown in the token × layer charts", max_lines=1,
                             placeholder=f"e.g. 40-79 (at most {present.limits.HEATMAP_TOKENS} at once; Enter to redraw)",
                             elem_id="ex-token-range")
    return dict(prompt=prompt, chat=chat, concept=concept, run=run, summary=summary, token_range=token_range)


def _charts() -> dict:
    norms0, heat0, lens0 = placeholders(WAITING)
    norms = gr.Plot(value=norms0, label="Residual norm per layer", elem_id="ex-norms", show_label=False)
    gr.Markdown(present.HOWTO["norms"], elem_classes=["howto"])
    norm_heat = gr.Plot(value=heat0, label="Norm heatmap", elem_id="ex-norm-heatmap", show_label=False)
    gr.Markdown(present.HOWTO["norm_heatmap"], elem_classes=["howto"])
    lens_plot = gr.Plot(value=lens0, label="Logit lens", elem_id="ex-lens", show_label=False)
    gr.Markdown(present.HOWTO["lens"], elem_classes=["howto"])
    lens_table = gr.Dataframe(headers=present.LENS_TABLE_HEADERS, value=[], type="array", interactive=False,
                              label="Logit lens at the last prompt position (top 5 per layer)", max_height=380,
                              elem_id="ex-lens-table", wrap=True)
    gr.Markdown(present.HOWTO["lens_table"], elem_classes=["howto"])
    proj_plot = gr.Plot(value=present.projection_figure(_NoProjection()), label="Concept projection",
                        elem_id="ex-projection", show_label=False)
    gr.Markdown(present.HOWTO["projection"], elem_classes=["howto"])
    return dict(norms=norms, norm_heat=norm_heat, lens_plot=lens_plot, lens_table=lens_table, proj_plot=proj_plot)


def _compare_box(service: Any) -> dict:
    with gr.Accordion("Compare two concepts across layers", open=True, elem_id="ex-compare"):
        with gr.Row(equal_height=False):
            cos_a = gr.Dropdown(choices=choices(service), value=_first(service, "happy"), label="Concept A",
                                elem_id="ex-cos-a", min_width=180, allow_custom_value=True)
            cos_b = gr.Dropdown(choices=choices(service), value=_first(service, "excited"), label="Concept B",
                                elem_id="ex-cos-b", min_width=180, allow_custom_value=True)
            compare = gr.Button("Compare", variant="primary", elem_id="ex-compare-run", min_width=120, scale=0,
                                elem_classes=["btn-end"])
        cos_plot = gr.Plot(value=empty_figure("Cosine similarity per layer", "Choose two concepts and press Compare."),
                           label="Cosine similarity", elem_id="ex-cosine", show_label=False)
        cos_md = gr.Markdown(elem_id="ex-cosine-summary", elem_classes=[KEPT_ERROR])
        gr.Markdown(present.HOWTO["cosine"], elem_classes=["howto"])
    return dict(cos_a=cos_a, cos_b=cos_b, compare=compare, cos_plot=cos_plot, cos_md=cos_md)


def _range_error(exc: BaseException) -> tuple:
    """The message under the token-range box, until the next try."""
    return gr.update(), gr.update(), gr.update(), gr.update(info=error_note(exc, "Not redrawn").replace("**", ""))


def _cosine_error(exc: BaseException) -> tuple:
    return (empty_figure("Cosine similarity per layer", "The last comparison failed: see below."),
            error_note(exc, "The comparison did not run"))


def _wire(h: ExplorerHandlers, w: dict) -> None:
    explore = guarded(shows_error(explore_error)(h.explore))
    inputs = [w["prompt"], w["concept"], w["chat"]]
    outputs = [w[k] for k in ("summary", "norms", "norm_heat", "lens_plot", "lens_table", "proj_plot")]
    w["token_range"].submit(guarded(shows_error(_range_error)(h.show_range)), [*inputs, w["token_range"]],
                            [w["norm_heat"], w["lens_plot"], w["proj_plot"], w["token_range"]],
                            api_visibility="private", **MODEL_CONCURRENCY)
    # Progress (and a failed run's "Error" badge) show on the summary line, not over every chart.
    w["run"].click(explore, inputs, outputs, api_name="explore", show_progress_on=[w["summary"]], **MODEL_CONCURRENCY)
    w["prompt"].submit(explore, inputs, outputs, api_visibility="private", show_progress_on=[w["summary"]],
                       **MODEL_CONCURRENCY)
    w["compare"].click(guarded(shows_error(_cosine_error)(h.cosine)), [w["cos_a"], w["cos_b"]],
                       [w["cos_plot"], w["cos_md"]], api_name="concept_cosine", show_progress_on=[w["cos_md"]],
                       **MODEL_CONCURRENCY)


def build(service: Any, ctx: Any) -> None:
    gr.Markdown(INTRO, elem_classes=["howto"])
    w = {**_prompt_box(service), **_charts(), **_compare_box(service)}
    _wire(ExplorerHandlers(service), w)
    ctx.register("explorer", **{k: w[k] for k in ("prompt", "concept", "run", "chat", "cos_a", "cos_b", "compare",
                                                   "summary", "norms")})


WAITING = "Press Explore to read the prompt through every layer."
FAILED = "The last run failed: the message is under the Explore button."


def placeholders(text: str) -> tuple:
    """The three charts before a run (or after a failed one), each saying why it is empty."""
    return (empty_figure("Residual-stream norm per layer", text), empty_figure("Residual norm per token and layer", text),
            empty_figure("Logit lens: what each layer would predict next", text))


def explore_error(exc: BaseException) -> tuple:
    """The old exploration cleared and the error written where its summary goes (until the next run)."""
    norms, heat, lens = placeholders(FAILED)
    return error_note(exc, "The exploration did not run"), norms, heat, lens, [], present.projection_figure(_NoProjection())


def _stage(progress: Any, lo: float, hi: float, what: str):
    """A (done, total) callback that maps onto [lo, hi] of the Gradio progress bar."""

    def report(done: int, total: int) -> None:
        frac = done / total if total else 1.0
        progress(lo + (hi - lo) * frac, desc=f"Extracting {what}: {done}/{total} prompts")

    return report


class _NoProjection:
    """Stand-in exploration for the initial, empty projection chart."""

    projections = None
    tokens: list = []
    concept = ""
    extra: dict = {}


def _first(service: Any, slug: str) -> str | None:
    slugs = [s for _, s in choices(service)]
    return slug if slug in slugs else (slugs[0] if slugs else None)


def wire(service: Any, ctx: Any) -> None:
    """Nothing of its own: app.ui.widgets refreshes this tab's concept lists with every other tab's."""
