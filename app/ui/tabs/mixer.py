"""Concept mixer: weighted sums of concept vectors, how alike concepts are, and steering with a mix.

The mix is one text (``happy:0.7, excited:0.3``) mirrored by up to four concept+weight rows; editing
the rows rewrites the text, editing the text refills the rows. Generation reuses the playground's
streaming code, so results look and download the same.
"""

from __future__ import annotations

from typing import Any, Iterator, Optional

import gradio as gr

from app.domain.requests import SteerRequest
from app.ui.context import MODEL_CONCURRENCY
from app.ui.errors import guarded
from app.ui.present import generation as present
from app.ui.present import sweeps as figures
from app.ui.streaming import arm_session, stop_session, stream_comparison
from app.ui.tabs.operations import op_param_update
from app.ui.widgets import (MAX_TOKENS_UI, REL_RANGE, check_layer, check_number, check_prompt, concept_choices,
                            concept_slugs, default_layer, gen_params, num_layers)

LABEL = "Concept mixer"  # this module is a tab (app.ui.tabs): its title ...
ORDER = 60  # ... and its place on the page

N_SLOTS = 4
NONE = ("(none)", "")
MIX_OPS = ("add", "ablate", "rotate")  # the operations whose parameter means the same for a mix as for one concept
MIX_OPS_NOTE = ("**Operation** on the mix's direction: *add* it (the strength slider), *ablate* it (remove that "
                "component, parameter a) or *rotate* towards it (parameter θ in degrees). *cap* and *clamp* are not "
                "offered here: their target t is counted in a concept's typical projection of its own positive "
                "examples, and a mix has no examples of its own, so t would have no meaning. Use them in the "
                "playground on a single concept.")

HOWTO = (
    "Steer with several concepts at once. A mix adds the concepts' vectors with the given weights at every layer "
    "(`happy:0.7, excited:0.3`; negative weights subtract). **Project out** removes one concept's direction from the "
    "mix (e.g. happy *without* excited). **Normalize** then rescales the *sum* at each layer to the weighted mean "
    "length of its parts (the weights still act on the raw vectors), so a mix whose parts partly cancel keeps a "
    "typical length. The cosine matrix shows how alike the directions are: similar concepts add up, opposite ones "
    "cancel."
)


def _default_mix(slugs: list[str]) -> list[tuple[str, float]]:
    if "happy" in slugs and "excited" in slugs:
        return [("happy", 0.7), ("excited", 0.3)]
    return [(s, round(1.0 / min(2, len(slugs)), 2)) for s in slugs[:2]]


def mix_request_text(text: Any, known: Optional[list[str]] = None) -> str:
    """The mix text, validated enough to give clear errors before the model is touched."""
    if not isinstance(text, str) or not text.strip():
        raise gr.Error("Write a mix first, e.g. happy:0.7, excited:0.3 (or set the concept rows).",
                       print_exception=False)
    present.parse_mix_text(text, known or None)  # the lab's one mix parser: clear errors before the model
    return text.strip()


def mix_op_fields(service: Any, op: Any, op_param: Any) -> dict:
    """The request's operation fields for a mix (add / ablate / rotate only; see MIX_OPS_NOTE)."""
    from app.ui.tabs.operations import op_fields

    op = (op or "add").strip() if isinstance(op, str) else "add"
    if op not in MIX_OPS:
        raise gr.Error(f"operation for a mix must be one of {', '.join(MIX_OPS)}, got {op!r} (cap and clamp need a "
                       "concept's own positive examples to set their target).", print_exception=False)
    return op_fields(service, op, op_param, "", "", 1.0)


def each_alone_markdown(service: Any, text: Any, prompt: Any, layer: Any, strength: Any, max_tokens: Any,
                        progress: Any = None, op: Any = "add", op_param: Any = None) -> str:
    """Each concept of the mix steered alone at the mix's layer, strength and operation: what did the mix add?"""
    from app.ui.present.common import md_escape

    prompt = check_prompt(prompt)
    terms = present.parse_mix_text(mix_request_text(text, concept_slugs(service)), concept_slugs(service))
    layer_i = check_layer(service, layer)
    s = float(check_number(strength, "strength", -REL_RANGE, REL_RANGE))
    fields = mix_op_fields(service, op, op_param)
    how = f"strength {s:g}" if fields["op"] == "add" else (
        f"{fields['op']}" + (f" {fields['op_param']:g}" if fields["op_param"] is not None else " (its default)"))
    lines = [f"**Each concept alone** at layer {layer_i}, {how} (compare with the mix above):", ""]
    for i, (slug, _) in enumerate(terms):
        if progress is not None:
            progress((i, len(terms)), desc=f"steering with {slug} by itself…")
        chunk, _settings = service.compare(SteerRequest(prompt=prompt, concept=slug, layers=[(layer_i, s)],
                                                        relative=True, params=gen_params(max_tokens), **fields))
        body = "\n".join("> " + md_escape(l) for l in (chunk.steered_text or "(empty)").splitlines()) or "> (empty)"
        lines += [f"*{slug} alone:*", "", body, ""]
    return "\n".join(lines)


class MixerHandlers:
    """The mixer's events as plain methods over the lab, so tests call them without a server."""

    def __init__(self, service: Any) -> None:
        self.service = service

    # ---- keeping the text and the rows in sync (user edits only: .input never loops) ----
    @staticmethod
    def rows_to_text(*values) -> str:
        concepts, weights = values[:N_SLOTS], values[N_SLOTS:]
        return present.format_mix_text(list(zip(concepts, weights)))

    @staticmethod
    def text_to_rows(text, *rows) -> list:
        """Refill the rows from the text; leave them alone while the text is half-typed or already matches."""
        keep = [gr.update() for _ in range(2 * N_SLOTS)]
        try:
            terms = present.parse_mix_text(text)
        except ValueError:
            return keep
        if len(terms) > N_SLOTS:
            return keep
        current = present.format_mix_text(list(zip(rows[:N_SLOTS], rows[N_SLOTS:])))
        if current == present.format_mix_text(terms):
            return keep  # the rows already say this (e.g. the text was just written from them)
        terms = terms + [("", 0.0)] * (N_SLOTS - len(terms))
        return ([gr.update(value=s) for s, _ in terms]
                + [gr.update(value=max(-1.0, min(1.0, w))) for _, w in terms])

    def cosine(self, text, project_out, layer) -> Any:
        names = [s for s, _ in present.parse_mix_text(text)] if (text or "").strip() else []
        if project_out and names and project_out not in names:
            names.append(project_out)
        if not names:
            raise gr.Error("Put at least one concept in the mix to compare.", print_exception=False)
        layer_i = check_layer(self.service, layer)
        got_slugs, matrix = self.service.cosine_matrix(names, layer_i)
        return figures.cosine_figure(got_slugs, matrix, layer_i)

    def request(self, text, normalize, project_out, prompt, layer, strength, max_tokens, op="add",
                op_param="") -> SteerRequest:
        prompt = check_prompt(prompt)
        mix = mix_request_text(text, concept_slugs(self.service))
        layer_i = check_layer(self.service, layer)
        s = float(check_number(strength, "strength", -REL_RANGE, REL_RANGE))
        return SteerRequest(prompt=prompt, concept=mix, layers=[(layer_i, s)], relative=True,
                            params=gen_params(max_tokens), normalize=bool(normalize),
                            project_out=(project_out,) if project_out else (),
                            **mix_op_fields(self.service, op, op_param))

    def generate(self, text, normalize, project_out, prompt, layer, strength, max_tokens, op="add", op_param="",
                 request: gr.Request = None) -> Iterator[tuple]:
        """Stream (baseline, steered, status, md, json) while both answers grow."""
        req = self.request(text, normalize, project_out, prompt, layer, strength, max_tokens, op, op_param)
        yield from stream_comparison(self.service, req, request)

    def each_alone(self, text, prompt, layer, strength, max_tokens, op="add", op_param="", progress=gr.Progress()):
        return each_alone_markdown(self.service, text, prompt, layer, strength, max_tokens, progress, op, op_param)

    def op_picked(self, name) -> Any:
        return op_param_update(self.service, name)

    def save_mix(self, slug, name, text, normalize, project_out, overwrite) -> str:
        slug = (slug or "").strip()
        if not slug:
            raise gr.Error("Give the new concept a slug (lowercase letters, digits and dashes).", print_exception=False)
        name = (name or "").strip() or slug
        mix = mix_request_text(text, concept_slugs(self.service))
        result = self.service.concepts.save_mix(slug, name, mix, bool(normalize), project_out or None, bool(overwrite))
        saved_slug = getattr(result, "slug", None) or slug
        options = [o for o, on in (("normalized", normalize), (f"without {project_out}", project_out)) if on]
        extra = f" ({', '.join(options)})" if options else ""
        return (f"Saved **{name}** as `{saved_slug}` = {mix}{extra}. It is now in the library and in every concept "
                "list.")


# ---- the tab --------------------------------------------------------------------------------
def _mix_box(choices: list, mix0: list) -> dict:
    """The mix text, its options and the concept+weight rows."""
    with gr.Row(equal_height=False):
        with gr.Column(scale=2, min_width=300):
            text = gr.Textbox(label="Mix", value=present.format_mix_text(mix0), elem_id="mx-text",
                              info="concept:weight, comma-separated; the rows on the right follow this text")
            with gr.Row():
                normalize = gr.Checkbox(value=False, label="Normalize the sum's length", elem_id="mx-normalize")
                project_out = gr.Dropdown(choices=[NONE, *choices], value="", label="Project out",
                                          allow_custom_value=False, elem_id="mx-project-out",
                                          info="Remove this concept's direction from the mix")
        with gr.Column(scale=3, min_width=300):
            slot_concepts, slot_weights = [], []
            for i in range(N_SLOTS):
                slug, w = mix0[i] if i < len(mix0) else ("", 0.0)
                with gr.Row(equal_height=True):
                    slot_concepts.append(gr.Dropdown(choices=[NONE, *choices], value=slug, label=f"Concept {i + 1}",
                                                     allow_custom_value=True, filterable=True, scale=3,
                                                     elem_id=f"mx-concept-{i + 1}", min_width=140))
                    slot_weights.append(gr.Slider(-1.0, 1.0, value=w, step=0.05, label=f"Weight {i + 1}", scale=3,
                                                  elem_id=f"mx-weight-{i + 1}", min_width=140))
    return dict(text=text, normalize=normalize, project_out=project_out, slot_concepts=slot_concepts,
                slot_weights=slot_weights)


def _cosine_box(n: int) -> dict:
    with gr.Accordion("How alike are these concepts? (cosine matrix)", open=True, elem_id="mx-cosine-box"):
        with gr.Row(equal_height=False):
            with gr.Column(scale=1, min_width=240):
                cos_layer = gr.Slider(0, n - 1, value=default_layer(n), step=1, label="Layer", elem_id="mx-cos-layer")
                cos_button = gr.Button("Show cosine matrix", elem_id="mx-cos-run")
                gr.Markdown("Cosine 1 = the same direction, 0 = unrelated, −1 = opposite. The matrix covers the "
                            "mix's concepts and the projected-out one.", elem_classes=["howto"])
            with gr.Column(scale=2, min_width=300):
                cos_plot = gr.Plot(label="Cosine similarity", elem_id="mx-cos-plot")
    return dict(cos_layer=cos_layer, cos_button=cos_button, cos_plot=cos_plot)


def _generate_box(service: Any, n: int) -> dict:
    gr.Markdown("### Generate with the mix")
    with gr.Row(equal_height=False):
        with gr.Column(scale=2, min_width=320):
            prompt = gr.Textbox(label="Prompt", value="Tell me about your weekend.", lines=2, elem_id="mx-prompt")
            layer = gr.Slider(0, n - 1, value=default_layer(n), step=1, label="Layer", elem_id="mx-layer")
            strength = gr.Slider(-REL_RANGE, REL_RANGE, value=0.3, step=0.01, label="Strength (relative)",
                                 elem_id="mx-strength")
            max_tokens = gr.Slider(1, MAX_TOKENS_UI, value=64, step=1, label="Max tokens", elem_id="mx-max-tokens")
            with gr.Row():
                infos = {o.name: o for o in service.operations()}
                op = gr.Dropdown([(f"{n}: {infos[n].help}" if n in infos else n, n) for n in MIX_OPS], value="add",
                                 label="Operation", elem_id="mx-op", min_width=160)
                op_param = gr.Textbox(value="", label="Operation parameter", elem_id="mx-op-param", min_width=120,
                                      placeholder="(the operation's default)", info="add uses the strength slider")
            gr.Markdown(MIX_OPS_NOTE, elem_classes=["howto"], elem_id="mx-op-note")
        with gr.Column(scale=3, min_width=360, elem_id="mx-results"):
            with gr.Row():
                generate = gr.Button("Generate with the mix", variant="primary", elem_id="mx-generate", scale=3)
                stop = gr.Button("Stop", variant="stop", elem_id="mx-stop", scale=1, min_width=80)
            status = gr.HTML(present.badge_html("ok", "ready"), elem_id="mx-status")
            base0, steer0 = present.empty_panes("Press “Generate with the mix”.")
            with gr.Row(equal_height=True, elem_classes=["panes-row"]):
                baseline = gr.HTML(base0, elem_id="mx-baseline")
                steered = gr.HTML(steer0, elem_id="mx-steered")
            with gr.Row():
                dl_md = gr.DownloadButton("Download Markdown", value=None, interactive=False, size="sm",
                                          elem_id="mx-dl-md")
                dl_json = gr.DownloadButton("Download JSON", value=None, interactive=False, size="sm",
                                            elem_id="mx-dl-json")
            alone = gr.Button("Compare with each concept alone (same layer, strength and operation)", size="sm",
                              elem_id="mx-alone")
            alone_out = gr.Markdown("", elem_id="mx-alone-out")
    return dict(prompt=prompt, layer=layer, strength=strength, max_tokens=max_tokens, op=op, op_param=op_param,
                generate=generate, stop=stop, status=status, baseline=baseline, steered=steered, dl_md=dl_md,
                dl_json=dl_json, alone=alone, alone_out=alone_out)


def _save_box() -> dict:
    with gr.Accordion("Save the mix as a concept", open=False, elem_id="mx-save-box"):
        with gr.Row():
            save_slug = gr.Textbox(value="", label="Slug", placeholder="e.g. happy-not-excited", elem_id="mx-save-slug")
            save_name = gr.Textbox(value="", label="Name", placeholder="e.g. Calm happiness", elem_id="mx-save-name")
            overwrite = gr.Checkbox(value=False, label="Overwrite if it exists", elem_id="mx-overwrite")
        save = gr.Button("Save mix as concept", elem_id="mx-save")
        saved = gr.Markdown("", elem_id="mx-saved")
    return dict(save_slug=save_slug, save_name=save_name, overwrite=overwrite, save=save, saved=saved)


def _wire(service: Any, ctx: Any, w: dict) -> None:
    """The events; every handler is a MixerHandlers method."""
    h = MixerHandlers(service)
    rows = [*w["slot_concepts"], *w["slot_weights"]]
    for comp in rows:
        comp.input(guarded(h.rows_to_text), rows, [w["text"]], api_visibility="private", queue=False,
                   show_progress="hidden")
    # .change (not .input) so text set by other tabs (tutorial) also refills the rows
    w["text"].change(guarded(h.text_to_rows), [w["text"], *rows], rows, api_visibility="private", queue=False,
                     show_progress="hidden", trigger_mode="always_last")
    w["cos_button"].click(guarded(h.cosine), [w["text"], w["project_out"], w["cos_layer"]], [w["cos_plot"]],
                          api_name="cosine_matrix", show_progress="minimal", **MODEL_CONCURRENCY)
    gen_inputs = [w[k] for k in ("text", "normalize", "project_out", "prompt", "layer", "strength", "max_tokens", "op",
                                 "op_param")]
    w["generate"].click(guarded(arm_session(service)), None, None, queue=False, show_progress="hidden",
                        api_visibility="private").then(
        guarded(h.generate), gen_inputs, [w[k] for k in ("baseline", "steered", "status", "dl_md", "dl_json")],
        api_name="mix_generate", show_progress="minimal", **MODEL_CONCURRENCY)
    w["stop"].click(guarded(stop_session(service)), None, None, api_visibility="private", queue=False)
    w["op"].input(guarded(h.op_picked), [w["op"]], [w["op_param"]], api_visibility="private", queue=False)
    w["alone"].click(guarded(h.each_alone), [w[k] for k in ("text", "prompt", "layer", "strength", "max_tokens", "op",
                                                           "op_param")],
                     [w["alone_out"]], api_name="mix_each_alone", show_progress_on=[w["alone_out"]],
                     **MODEL_CONCURRENCY)
    ctx.library_events.append(w["save"].click(
        guarded(h.save_mix), [w[k] for k in ("save_slug", "save_name", "text", "normalize", "project_out",
                                             "overwrite")],
        [w["saved"]], api_name="save_mix", **MODEL_CONCURRENCY))


def build(service: Any, ctx: Any) -> None:
    n = num_layers(service)
    choices = concept_choices(service)
    gr.Markdown(HOWTO, elem_classes=["howto"])
    w = {**_mix_box(choices, _default_mix(concept_slugs(service))), **_cosine_box(n), **_generate_box(service, n),
         **_save_box()}
    _wire(service, ctx, w)
    keys = ("text", "prompt", "generate", "normalize", "project_out", "layer", "strength", "max_tokens", "status",
            "op", "op_param", "cos_layer", "baseline", "steered", "alone_out")
    ctx.register("mixer", **{k: w[k] for k in keys},
                 **{f"concept_{i + 1}": c for i, c in enumerate(w["slot_concepts"])},
                 **{f"weight_{i + 1}": c for i, c in enumerate(w["slot_weights"])})
