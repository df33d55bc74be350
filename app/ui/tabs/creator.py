"""Concept creator: contrast pairs in, a steering vector per layer and its quality card out."""

from __future__ import annotations

import logging
from typing import Any, Iterator

import gradio as gr

from app.domain.requests import ExtractRequest
from app.service.lab import follow  # plain threading; no model runtime
from app.types import CATEGORIES
from app.ui.context import MODEL_CONCURRENCY
from app.ui.errors import error_note, guarded, shows_error
from app.ui.feedback import KEPT_ERROR
from app.ui import widgets
from app.ui.present.insight import vector_lens_md
from app.ui.present import concepts as present
from app.ui.present.common import empty_figure, md_escape
from app.ui.streaming import session_id

LABEL = "Concept creator"  # this module is a tab (app.ui.tabs): its title ...
ORDER = 30  # ... and its place on the page

log = logging.getLogger("steering_lab.ui")

EMPTY_ROWS = [["", ""], ["", ""], ["", ""]]
EMPTY_QUALITY = empty_figure("Concept quality per layer",
                             "Press “Extract vectors” to see how well your pairs define the concept at each layer.")
INTRO = ("A concept is defined by **contrast pairs**: a *positive* text that has the concept and a *negative* "
         "text about the same thing without it. Only the concept should differ, so the average difference of "
         "the model's activations points at the concept. 4–20 pairs are enough to start.")
PASTE_PLACEHOLDER = ("One pair per line, positive | negative (or separated by a tab):\n"
                     "Yawn… I'm so sleepy I can barely keep my eyes open. | I'm at my desk reading the news.\n"
                     "I could fall asleep right here on the couch. | I'm sitting on the couch watching TV.")


EXTRACT_SCOPE = "extract"  # the creator's Stop cancels only this page's extraction, not a generation


def template_choices(service: Any) -> list[tuple[str, str]]:
    try:
        return present.concept_choices([s for s in service.concepts.list() if s.n_pairs > 0])
    except Exception:
        log.exception("listing concepts failed")
        return []


def _calibration_of(service: Any, slug: str):
    """The stored calibration of a library concept with this slug (its shipped vectors), or None."""
    try:
        return service.concepts.calibration_report(slug) if slug and service.concepts.exists(slug) else None
    except Exception:
        log.exception("reading the calibration report failed")
        return None


def _form_concept(name, slug, description, category, table, sys_pos, sys_neg, provenance=None, strict_slug=True):
    pairs, problems = present.table_to_pairs(table)
    present.check_pairs(pairs, problems)
    if not strict_slug:  # extraction does not need a valid slug yet: fall back to a placeholder
        try:
            present.concept_from_form(name, slug, description, category, pairs[:0], sys_pos, sys_neg)
        except ValueError:
            name, slug = (name or "").strip() or "Draft concept", "draft"
    return present.concept_from_form(name, slug, description, category, pairs, sys_pos, sys_neg,
                                     provenance=provenance)


def extract_error(exc: BaseException) -> tuple:
    """The old card cleared (it described other pairs) and the error written under the Extract button."""
    from app.errors import Cancelled

    note = ("**Extraction stopped**: nothing was kept. Press **Extract vectors** again when you are ready."
            if isinstance(exc, Cancelled) else error_note(exc, "The extraction did not run"))
    return "", EMPTY_QUALITY, None, note


def save_error(exc: BaseException) -> tuple:
    return error_note(exc, "The concept was not saved"), gr.update(), gr.update()


class CreatorHandlers:
    """The creator's template, extraction, Stop and save as plain methods over the lab (tested without a server)."""

    def __init__(self, service: Any) -> None:
        self.service = service

    # ---- the pairs table and the name -> slug rule ----
    @staticmethod
    def add_row(table) -> list:
        return present.table_rows(table) + [["", ""]]

    @staticmethod
    def remove_last(table) -> list:
        rows = present.table_rows(table)
        return rows[:-1] if len(rows) > 1 else [["", ""]]

    @staticmethod
    def append_pasted(table, text) -> tuple:
        new, problems = present.parse_pasted_pairs(text)
        if not new and not problems:
            raise gr.Error("The paste box is empty: one pair per line, positive | negative.", print_exception=False)
        if problems:
            gr.Warning("Skipped: " + "; ".join(problems[:4]) + (" …" if len(problems) > 4 else ""))
        if new:
            gr.Info(f"Added {len(new)} pair{'s' if len(new) != 1 else ''}.")
        return present.append_pairs(table, new), ("" if not problems else text)

    @staticmethod
    def name_typed(name_v, slug_v, manual) -> Any:
        """The slug follows the name until the user types a slug of their own."""
        if manual and (slug_v or "").strip():
            return gr.Textbox()
        return gr.Textbox(value=present.slug_for(name_v))

    def load_template(self, slug_v) -> tuple:
        if not slug_v:
            raise gr.Error("Choose a concept to start from.", print_exception=False)
        c = self.service.concepts.get(slug_v)
        sp = c.system_prompts
        gr.Info(f"Loaded {len(c.pairs)} pairs from “{c.name}”. Edit them, then Extract.")
        return (f"My {c.name}", f"my-{c.slug}"[:64], c.description, c.category if c.category in CATEGORIES else "custom",
                present.pairs_to_rows(c.pairs) or EMPTY_ROWS, sp.positive if sp else "", sp.negative if sp else "",
                False, None, EMPTY_QUALITY, "")

    def extract(self, name_v, slug_v, desc_v, cat_v, table, sp_v, sn_v, method_v, request: gr.Request = None,
                progress=gr.Progress()) -> Iterator[tuple]:
        """(quality text, quality figure, vectors, status): ticks while the pairs are read, then the card."""
        service = self.service
        concept = _form_concept(name_v, slug_v, desc_v, cat_v, table, sp_v, sn_v, strict_slug=False)
        n = len(concept.pairs)
        progress(0.0, desc=f"Reading {2 * n} prompts through the model…")

        def report(done, total):
            progress((int(done), int(total)), desc="Reading prompts through every layer", unit="prompts")

        session = session_id(request, EXTRACT_SCOPE)
        token = service.start(session)
        skip = (gr.skip(),) * 4
        try:  # a generator: a client that leaves closes it, which cancels the extraction
            req = ExtractRequest(concept.slug, method=method_v or "mean_diff", save=False)
            for kind, value in follow(lambda: service.extract(req, concept, progress=report, token=token), token):
                if kind == "wait":
                    progress(0.0, desc=f"waiting: {value} job{'s' if value != 1 else ''} ahead")
                if kind == "done":
                    cv = value
                else:
                    yield skip
        finally:
            service.finish(session, token)
        title = f"Quality of “{concept.name}” per layer ({cv.method}, {n} pairs)"
        calibration = _calibration_of(service, concept.slug)
        lens = vector_lens_md(service.vector_lens(cv), cv.recommended_layers)
        yield (present.quality_summary_md(cv, concept.name, calibration, concept.pairs) + "\n\n" + lens,
               present.quality_figure(cv, title), cv,
               f"Extracted {n} pairs with `{cv.method}`. Press **Save to library** to keep the concept and its "
               "vectors.")

    def stop_extract(self, request: gr.Request = None) -> None:
        if self.service.stop(session_id(request, EXTRACT_SCOPE)):
            gr.Info("Extraction stopped.")

    def save(self, name_v, slug_v, desc_v, cat_v, table, sp_v, sn_v, overwrite_v, cv) -> tuple:
        concept = _form_concept(name_v, slug_v, desc_v, cat_v, table, sp_v, sn_v)
        lib = self.service.concepts
        if lib.exists(concept.slug) and not overwrite_v:
            what = "a shipped concept" if lib.is_shipped(concept.slug) and not lib.has_user_copy(concept.slug) \
                else "a concept in your library"
            raise gr.Error(f"“{concept.slug}” is already {what}. Choose another slug, or tick “Overwrite an existing "
                           f"concept with this slug” to replace it.", print_exception=False)
        # the concept and its vectors (if extracted from exactly these pairs on this model) together, or not at all
        stored, keep = lib.save(concept, cv, overwrite=bool(overwrite_v))
        msg = f"Saved **{md_escape(stored.name)}** as `{stored.slug}` with {len(stored.pairs)} pairs."
        if keep:
            msg += f" Its vectors for `{md_escape(cv.model_id)}` are stored too: it is ready to steer."
        else:
            msg += (" No matching extracted vectors were stored (the pairs changed since Extract, or nothing was "
                    "extracted); they will be extracted the first time you use the concept.")
        gr.Info(f"Saved “{stored.name}” ({stored.slug}).")
        return msg, stored.slug, gr.Checkbox(value=False)


def _concept_box(service: Any) -> dict:
    """The template picker, name, slug, description, category and the pairs table."""
    with gr.Row(equal_height=False):
        with gr.Column(scale=2, min_width=280):
            with gr.Row(equal_height=False):
                template = gr.Dropdown(choices=template_choices(service), value=None, allow_custom_value=True,
                                       label="Start from a library concept", scale=3, min_width=160,
                                       elem_id="cr-template")
                load_tpl = gr.Button("Load", scale=0, min_width=80, elem_id="cr-load-template",
                                     elem_classes=["btn-end"])
            name = gr.Textbox(label="Name", placeholder="e.g. Sleepy", elem_id="cr-name")
            slug = gr.Textbox(label="Slug (file name: a-z, 0-9, - and _)", placeholder="made from the name",
                              elem_id="cr-slug")
            description = gr.Textbox(label="Description", lines=2, elem_id="cr-description",
                                     placeholder="What the positive side has that the negative lacks")
            category = gr.Dropdown(list(CATEGORIES), value="custom", label="Category", elem_id="cr-category")
        with gr.Column(scale=3, min_width=320):
            pairs = gr.Dataframe(
                value=EMPTY_ROWS, headers=present.PAIR_HEADERS, type="array", interactive=True, datatype="str",
                label="Contrast pairs: positive (has the concept) | negative (same situation, without it)",
                wrap=True, max_height=420, column_widths=["50%", "50%"], elem_id="cr-pairs",
            )
            with gr.Row():
                add_row = gr.Button("+ Add row", size="sm", elem_id="cr-add-row", min_width=90)
                remove_row = gr.Button("− Remove last row", size="sm", elem_id="cr-remove-row", min_width=90)
                clear = gr.Button("Clear table", size="sm", elem_id="cr-clear", min_width=90)
            with gr.Accordion("Paste many pairs at once", open=True, elem_id="cr-paste-box"):
                paste = gr.Textbox(lines=4, max_lines=20, show_label=False, placeholder=PASTE_PLACEHOLDER,
                                   elem_id="cr-paste")
                append = gr.Button("Append pasted lines to the table", size="sm", elem_id="cr-append")
    with gr.Accordion("Optional: system prompts that frame every positive / negative example", open=False):
        with gr.Row():
            sys_pos = gr.Textbox(label="Positive system prompt", placeholder="e.g. Act as if you are extremely sleepy.",
                                 elem_id="cr-sys-pos")
            sys_neg = gr.Textbox(label="Negative system prompt", placeholder="e.g. Act as if you are wide awake.",
                                 elem_id="cr-sys-neg")
    return dict(template=template, load_tpl=load_tpl, name=name, slug=slug, description=description,
                category=category, pairs=pairs, add_row=add_row, remove_row=remove_row, clear=clear, paste=paste,
                append=append, sys_pos=sys_pos, sys_neg=sys_neg)


def _extract_box(service: Any) -> dict:
    """The method, Extract / Stop, the quality card and Save / Try it."""
    with gr.Row(equal_height=False):
        methods = service.extraction_methods()  # the registry in app.domain.methods, through the service
        method = gr.Radio([name for name, _ in methods], value="mean_diff", label="Extraction method",
                          elem_id="cr-method", scale=1, min_width=260)
        gr.Markdown("\n".join(f"- {help_}" for _, help_ in methods), elem_classes=["howto"])
    with gr.Row():
        extract = gr.Button("Extract vectors", variant="primary", elem_id="cr-extract", scale=3)
        stop = gr.Button("Stop", variant="stop", elem_id="cr-stop", scale=1, min_width=80)
    extract_status = gr.Markdown(elem_id="cr-extract-status", elem_classes=["run-status", KEPT_ERROR])
    quality_md = gr.Markdown(elem_id="cr-quality-summary")
    quality_plot = gr.Plot(value=EMPTY_QUALITY, label="Quality per layer", show_label=False, elem_id="cr-quality-plot")
    gr.Markdown("**How to read the card:** the shaded band marks the recommended layers. Good concepts have high "
                "held-out accuracy and a large d′ there; the vector's own length does not matter, because "
                "steering strength is measured relative to a typical token.", elem_classes=["howto"])
    with gr.Row(equal_height=True):
        overwrite = gr.Checkbox(value=False, label="Overwrite an existing concept with this slug", elem_id="cr-overwrite",
                                scale=2)
        save = gr.Button("Save to library", variant="primary", elem_id="cr-save", scale=1, min_width=140)
        use = gr.Button("Try it in the playground →", elem_id="cr-use", scale=1, min_width=140)
    save_status = gr.Markdown(elem_id="cr-save-status", elem_classes=[KEPT_ERROR])
    return dict(method=method, extract=extract, stop=stop, extract_status=extract_status, quality_md=quality_md,
                quality_plot=quality_plot, overwrite=overwrite, save=save, use=use, save_status=save_status)


def _wire(ctx: Any, h: CreatorHandlers, w: dict) -> None:
    """The events; every handler is a CreatorHandlers method (tested without a server)."""
    pairs = w["pairs"]
    w["add_row"].click(guarded(h.add_row), [pairs], [pairs], api_visibility="private", queue=False)
    w["remove_row"].click(guarded(h.remove_last), [pairs], [pairs], api_visibility="private", queue=False)
    w["clear"].click(lambda: EMPTY_ROWS, None, [pairs], api_visibility="private", queue=False)
    w["append"].click(guarded(h.append_pasted), [pairs, w["paste"]], [pairs, w["paste"]], api_name="creator_paste")
    w["name"].change(guarded(h.name_typed), [w["name"], w["slug"], w["slug_manual"]], [w["slug"]],
                     api_visibility="private", queue=False, show_progress="hidden")
    w["slug"].input(lambda v: bool((v or "").strip()), [w["slug"]], [w["slug_manual"]], api_visibility="private",
                    queue=False, show_progress="hidden")
    w["load_tpl"].click(guarded(h.load_template), [w["template"]],
                        [w[k] for k in ("name", "slug", "description", "category", "pairs", "sys_pos", "sys_neg",
                                        "slug_manual", "cv_state", "quality_plot", "quality_md")],
                        api_name="creator_template", queue=False)
    form = [w[k] for k in ("name", "slug", "description", "category", "pairs", "sys_pos", "sys_neg")]
    ext_event = w["extract"].click(guarded(shows_error(extract_error)(h.extract)), [*form, w["method"]],
                                   [w[k] for k in ("quality_md", "quality_plot", "cv_state", "extract_status")],
                                   api_name="extract", show_progress_on=[w["extract_status"]], **MODEL_CONCURRENCY)
    w["stop"].click(guarded(h.stop_extract), None, None, cancels=[ext_event], queue=False, api_visibility="private")
    ctx.library_events.append(w["save"].click(
        guarded(shows_error(save_error)(h.save)), [*form, w["overwrite"], w["cv_state"]],
        [w["save_status"], w["saved_slug"], w["overwrite"]], api_name="save_concept",
        show_progress_on=[w["save_status"]]))


def build(service: Any, ctx: Any) -> None:
    gr.Markdown(INTRO, elem_classes=["howto"])
    w = {"slug_manual": gr.State(False), "cv_state": gr.State(None), "saved_slug": gr.State(""),
         **_concept_box(service), **_extract_box(service)}
    _wire(ctx, CreatorHandlers(service), w)
    ctx.register("creator", **{k: w[k] for k in ("name", "slug", "description", "category", "pairs", "template",
                                                  "extract", "save", "use", "saved_slug", "paste", "quality_md",
                                                  "quality_plot", "slug_manual", "cv_state")},
                 status=w["save_status"])


def wire(service: Any, ctx: Any) -> None:
    template = ctx.get("creator.template")

    @guarded
    def refresh():
        return gr.Dropdown(choices=template_choices(service))

    if ctx.tabs is not None:
        ctx.tabs.select(refresh, None, [template], api_visibility="private", queue=False, show_progress="hidden")

    # "Try it in the playground": hand the concept to the playground (other engineer's tab), if it exists.
    use = ctx.get("creator.use")
    targets = [k for k in ("playground.concept", "playground.layer", "playground.strength", "playground.absolute")
               if k in ctx.components]
    if not targets:
        log.info("creator: 'Try it in the playground' has no target (missing: playground.concept)")

    n_out = len(targets) + (1 if ctx.tabs is not None else 0)

    @guarded
    @shows_error(lambda exc: [gr.update()] * n_out + [error_note(exc, "Not sent to the playground")])
    def use_concept(slug_v, saved):
        slug_v = (saved or slug_v or "").strip()
        if not slug_v or not service.concepts.exists(slug_v):
            raise gr.Error("Save the concept first, then try it in the playground.", print_exception=False)
        out: list = [gr.Dropdown(value=slug_v)]
        if len(targets) == 4:  # the playground moves to the concept's recommended setting, as its hint says
            out += list(widgets.recommended_updates(service, slug_v))
        out = out[:len(targets)]
        if ctx.tabs is not None:
            out.append(gr.Tabs(selected="playground"))
        return out + [gr.update()]

    outputs = [ctx.get(k) for k in targets] + ([ctx.tabs] if ctx.tabs is not None else []) + [ctx.get("creator.status")]
    use.click(use_concept, [ctx.get("creator.slug"), ctx.get("creator.saved_slug")], outputs,
              api_visibility="private", show_progress="minimal", show_progress_on=[ctx.get("creator.status")],
              **MODEL_CONCURRENCY)

