"""Library: browse, inspect, export/import, rename/duplicate and delete concepts."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional

import gradio as gr

from app.ui.model_follow import gguf_layers_placeholder

from app.service.lab import slugify
from app.types import CATEGORIES
from app.ui.context import MODEL_CONCURRENCY
from app.ui.downloads import out_dir, remove_upload
from app.ui.errors import guarded
from app.ui.present.insight import vector_lens_md
from app.ui.present import concepts as present
from app.domain import limits
from app.ui.present.common import finite, md_escape, parse_layer_spec, rows_or_placeholder

LABEL = "Library"  # this module is a tab (app.ui.tabs): its title ...
ORDER = 70  # ... and its place on the page

log = logging.getLogger("steering_lab.ui")

ALL = "all"
MAX_IMPORT_BYTES = limits.IMPORT_BYTES
# One click downloads: once the export is written, click the file's link for the user (the link stays as a fallback).
DOWNLOAD_JS = ("() => { setTimeout(() => { const a = document.querySelector('#lib-export-file a[download], "
               "#lib-export-file a[href]'); if (a) a.click(); }, 400); }")
INTRO = ("Every concept you can steer with: the shipped ones (read-only) and yours. Click a row to see its card. "
         "Vectors are stored per model; “not extracted” means they will be computed the first time you use it.")
NOTHING_SELECTED = "_Select a concept in the table (or the dropdown) to see its card._"


def _model(service: Any):
    return service.info() if getattr(service, "is_loaded", False) else None


def _depth(service: Any) -> int:
    info = _model(service)
    return int(info.num_layers) if info else 30


def statuses(service: Any, summaries) -> dict[str, str]:
    out = {}
    for s in summaries:
        try:
            out[s.slug] = service.concepts.vector_status(s.slug)
        except Exception as exc:  # one unreadable concept must not hide the others
            log.warning("vector status of %s failed: %s", s.slug, exc)
            out[s.slug] = "mismatch"
    return out


def listing(service: Any, search: str = "", category: str = ALL) -> tuple[list[list[Any]], list[str]]:
    """(table rows, slugs) for the current filter."""
    lib = service.concepts
    summaries = lib.list(category=None if category in (None, "", ALL) else category, text=(search or "").strip() or None)
    shadowing = [s.slug for s in summaries if not s.shipped and lib.is_shipped(s.slug)]
    rows = present.library_rows(summaries, statuses(service, summaries), shadowing, _calibration(service))
    return rows, [s.slug for s in summaries]


def problems_note(service: Any) -> str:
    """Files the last listing skipped (unreadable or invalid), so one bad file is visible, not fatal."""
    problems = service.concepts.problems()
    if not problems:
        return ""
    shown = service.concepts.shown
    items = "\n".join(f"- `{md_escape(shown(path))}`: {md_escape(str(msg).splitlines()[0])}" for path, msg in problems[:10])
    more = f"\n- … and {len(problems) - 10} more" if len(problems) > 10 else ""
    return f"**Skipped {len(problems)} file(s) that could not be read:**\n{items}{more}"


def _calibration(service: Any, slug: Optional[str] = None) -> Any:
    """The loaded model's calibration reports (all, or one concept's); {} / None without a model."""
    if _model(service) is None:
        return {} if slug is None else None
    try:
        return service.concepts.calibration_reports() if slug is None else service.concepts.calibration_report(slug)
    except Exception:  # a broken report must not hide the library
        log.exception("reading the calibration report failed")
        return {} if slug is None else None


def all_slug_choices(service: Any) -> list[tuple[str, str]]:
    return present.concept_choices(service.concepts.list())


def card(service: Any, slug: Optional[str]):
    """(card markdown, quality plot update) for one concept."""
    if not slug:
        return NOTHING_SELECTED, gr.Plot(visible=False)
    lib = service.concepts
    concept = lib.get(slug)
    info = _model(service)
    status = ""
    cv = None
    if info is not None:
        status = lib.vector_status(slug)
        if status == "ready":
            cv = lib.stored_vectors(slug)
    summary = None
    try:  # the declared judge, and a trained probe's held-out accuracy (never trains one here)
        summary = lib.judge_summary(slug)
    except Exception:  # noqa: BLE001 - the card still shows the declared judge
        summary = None
    md = present.concept_card_md(concept, lib.is_shipped(slug), lib.has_user_copy(slug), status,
                                 info.model_id if info else "", judge=summary, other_models=_other_models(lib, slug))
    if info is not None and concept.pairs:
        md += "\n\n" + present.reliability_md(_calibration(service, slug))
    if cv is not None and cv.quality:
        md += "\n\n" + present.quality_brief_md(cv.quality, cv.recommended_layers)
        md += "\n\n" + vector_lens_md(service.vector_lens(cv, k=5), cv.recommended_layers)
        fig = present.quality_figure(cv, f"Quality of “{concept.name}” on {info.model_id}")
        return md, gr.Plot(value=fig, visible=True)
    return md, gr.Plot(visible=False)


def _other_models(lib: Any, slug: str) -> list[str]:
    """The models besides the loaded one that have vectors stored for ``slug``."""
    try:
        return lib.other_models(slug)
    except Exception:  # noqa: BLE001 - an unreadable vectors folder must not hide the card
        log.exception("listing the stored vectors of %s failed", slug)
        return []


def _out_dir() -> Path:
    return out_dir("export")


class LibraryHandlers:
    """The library tab's events as plain methods over the lab, so tests call them without a server."""

    def __init__(self, service: Any) -> None:
        self.service = service


    def _selected(self, slug: Optional[str]) -> Any:
        """The selected-concept dropdown after a change: fresh choices, ``slug`` picked."""
        return gr.Dropdown(choices=_safe_choices(self.service), value=slug)

    # ---- listing and cards ----
    def list(self, search_v, category_v) -> list:
        """The table rows for the filter (a placeholder row when nothing matches)."""
        rows, _ = listing(self.service, search_v, category_v)
        return rows_or_placeholder(rows, len(present.LIBRARY_HEADERS), "(no concept matches)")

    def problems(self) -> str:
        return problems_note(self.service)

    @staticmethod
    def pick_row(evt: gr.SelectData) -> Any:
        row = evt.row_value or []
        slug = row[1] if len(row) > 1 else None
        return gr.Dropdown(value=slug or None)

    def card(self, slug_v) -> tuple[str, Any]:
        return card(self.service, slug_v)

    def refresh(self, search_v, category_v) -> tuple[list, Any]:
        """On any tab switch: another tab may have saved a concept."""
        return self.list(search_v, category_v), gr.Dropdown(choices=_safe_choices(self.service))

    def refresh_card(self, selected_v, evt: gr.SelectData) -> tuple[Any, Any]:
        """When this tab opens, the card again: its vectors are per model, and the model may have changed."""
        if getattr(evt, "value", None) != LABEL or not selected_v:
            return gr.update(), gr.update()
        try:
            return card(self.service, selected_v)
        except Exception:  # noqa: BLE001 - e.g. the selected concept was deleted in another tab
            return NOTHING_SELECTED, gr.Plot(visible=False)

    # ---- export ----
    def export_yaml(self, slug_v) -> tuple[Any, str]:
        slug_v = _need(slug_v)
        path = _out_dir() / f"{slug_v}.steering.yaml"
        path.write_text(self.service.concepts.export_bundle(slug_v), encoding="utf-8")
        return (gr.File(value=str(path), visible=True),
                f"Exported `{slug_v}` as a YAML bundle (the concept and its current vectors).")

    def export_gguf(self, slug_v, layers_v, strength_v, relative_v, progress=gr.Progress()) -> tuple[Any, str]:
        slug_v = _need(slug_v)
        info = _model(self.service)
        layers = parse_layer_spec(layers_v or "", info.num_layers if info else None, "GGUF layers")
        if layers and 0 in layers:
            raise gr.Error("llama.cpp cannot steer layer 0 (its loader rejects direction.0); start the range at 1.",
                           print_exception=False)
        strength_v = str(strength_v if strength_v is not None else "").strip()
        strength = finite(strength_v) if strength_v else None
        if strength_v and strength is None:
            raise gr.Error("The strength must be a finite number (or empty for the vectors as stored).",
                           print_exception=False)
        progress(0.1, desc="Writing the control vector (extracting first if needed)…")
        path = _out_dir() / f"{slug_v}.gguf"
        res = self.service.concepts.export_gguf(slug_v, str(path), layers=layers or None, strength=strength,
                                                relative=bool(relative_v))
        written = list(getattr(res, "layers", None) or layers)
        what = f"layers {layers_v.strip()}" if layers else "all layers except 0"
        if strength is None:
            use = f"raw vectors: in llama.cpp use `--control-vector-scaled {path.name} <scale>`"
        else:
            use = (f"strength {strength:g} ({'relative' if relative_v else 'absolute'}) baked in: use "
                   f"`--control-vector {path.name}`")
        notes = "".join(f"\n- {md_escape(n)}" for n in (getattr(res, "notes", None) or []))
        return (gr.File(value=str(path), visible=True),
                f"Exported `{slug_v}` as a llama.cpp control vector ({what}; {len(written)} layers written); {use}.{notes}")

    # ---- import ----
    def import_file(self, file_v, slug_v, overwrite_v, search_v, category_v, progress=gr.Progress()):
        if not file_v:
            raise gr.Error("Choose a .yaml bundle or a .gguf control vector to import.", print_exception=False)
        try:
            return self._import(Path(file_v), (slug_v or "").strip(), bool(overwrite_v), search_v, category_v,
                                progress)
        finally:
            remove_upload(file_v)  # Gradio keeps every upload otherwise

    def _import(self, path: Path, slug_v: str, overwrite: bool, search_v, category_v, progress):
        size = path.stat().st_size
        if size > MAX_IMPORT_BYTES:
            raise gr.Error(f"The file is {size / 1e6:.0f} MB; bundles and control vectors are far smaller "
                           f"(limit {MAX_IMPORT_BYTES // 1_000_000} MB).", print_exception=False)
        lib = self.service.concepts
        if path.suffix.lower() == ".gguf":
            progress(0.1, desc="Reading the control vector and measuring typical norms…")
            new = lib.import_gguf(str(path), slug_v or slugify(path.stem.split(".")[0]), overwrite=overwrite)
        elif path.suffix.lower() in (".yaml", ".yml"):
            new = lib.import_bundle(path.read_bytes(), slug=slug_v or None, overwrite=overwrite)
        else:
            raise gr.Error(f"Unknown file type {path.suffix!r}: import a .yaml bundle or a .gguf control vector.",
                           print_exception=False)
        rows, _ = listing(self.service, search_v, category_v)
        gr.Info(f"Imported “{new}”.")
        return f"Imported as `{new}`.", rows, self._selected(new)

    # ---- rename / duplicate / delete ----
    def _to_new_slug(self, change: Any, done: str, slug_v, new_v, search_v, category_v):
        slug_v, new_v = _need(slug_v), _need_new(new_v)
        change(slug_v, new_v)
        rows, _ = listing(self.service, search_v, category_v)
        return done.format(old=slug_v, new=new_v), rows, self._selected(new_v), ""

    def rename(self, slug_v, new_v, search_v, category_v):
        return self._to_new_slug(self.service.concepts.rename, "Renamed `{old}` to `{new}`.", slug_v, new_v,
                                 search_v, category_v)

    def duplicate(self, slug_v, new_v, search_v, category_v):
        return self._to_new_slug(self.service.concepts.duplicate,
                                 "Duplicated `{old}` as `{new}` (your copy: edit it in the creator).", slug_v, new_v,
                                 search_v, category_v)

    def delete(self, slug_v, confirm_v, search_v, category_v):
        slug_v = _need(slug_v)
        lib = self.service.concepts
        if lib.is_shipped(slug_v) and not lib.has_user_copy(slug_v):
            raise gr.Error(f"“{slug_v}” ships with the lab and cannot be deleted. Duplicate it to make your own "
                           "version instead.", print_exception=False)
        if not confirm_v:
            raise gr.Error(f"Tick “I understand…” first: deleting “{slug_v}” also removes its vectors and cannot "
                           "be undone.", print_exception=False)
        shadowed = lib.is_shipped(slug_v)
        lib.delete(slug_v)
        rows, _ = listing(self.service, search_v, category_v)
        note = " The shipped version is visible again." if shadowed else ""
        return (f"Deleted `{md_escape(slug_v)}`.{note}", rows, self._selected(slug_v if shadowed else None),
                gr.Checkbox(value=False))


# ---- the tab --------------------------------------------------------------------------------
def _browse_box(service: Any) -> dict:
    rows0, _ = _safe_listing(service)
    with gr.Row(equal_height=False):
        search = gr.Textbox(label="Search", placeholder="name, slug, tag or description", scale=3, elem_id="lib-search")
        category = gr.Dropdown([ALL, *CATEGORIES], value=ALL, label="Category", scale=1, min_width=140,
                               elem_id="lib-category")
        refresh = gr.Button("Refresh", scale=0, min_width=90, elem_id="lib-refresh", elem_classes=["btn-end"])
    table = gr.Dataframe(value=rows0, headers=present.LIBRARY_HEADERS, type="array", interactive=False,
                         max_height=360, elem_id="lib-table", wrap=True,
                         column_widths=["18%", "14%", "10%", "7%", "16%", "15%", "20%"])
    problems_md = gr.Markdown(problems_note(service), elem_id="lib-problems")
    return dict(search=search, category=category, refresh=refresh, table=table, problems_md=problems_md)


def _export_box(service: Any) -> dict:
    with gr.Accordion("Export", open=True):
        export_yaml = gr.Button("Download YAML bundle (concept + its vectors)", size="sm", elem_id="lib-export-yaml")
        with gr.Row(equal_height=True):
            gguf_layers = gr.Textbox(label="GGUF layers", placeholder=gguf_layers_placeholder(_depth(service)),
                                     min_width=120, elem_id="lib-gguf-layers")
            gguf_strength = gr.Textbox(label="Strength (optional)", placeholder="as stored", min_width=100,
                                       elem_id="lib-gguf-strength")
        gguf_relative = gr.Checkbox(value=True, label="Strength is relative to the typical norm")
        export_gguf = gr.Button("Download llama.cpp control vector (.gguf)", size="sm", elem_id="lib-export-gguf")
        export_file = gr.File(label="Exported file", interactive=False, visible=False, elem_id="lib-export-file")
        gr.Markdown("llama.cpp adds every exported layer at once, so export a narrow range (e.g. the "
                    "recommended layers). Layer 0 cannot be exported.", elem_classes=["howto"])
    return dict(export_yaml=export_yaml, gguf_layers=gguf_layers, gguf_strength=gguf_strength,
                gguf_relative=gguf_relative, export_gguf=export_gguf, export_file=export_file)


def _change_boxes() -> dict:
    """Import, rename or duplicate, delete."""
    with gr.Accordion("Import", open=False):
        upload = gr.File(label="YAML bundle or .gguf control vector", file_types=[".yaml", ".yml", ".gguf"],
                         type="filepath", elem_id="lib-upload")
        import_slug = gr.Textbox(label="Slug for the imported concept", placeholder="from the file if empty",
                                 elem_id="lib-import-slug")
        import_overwrite = gr.Checkbox(value=False, label="Overwrite an existing concept with this slug")
        import_btn = gr.Button("Import", size="sm", elem_id="lib-import")
    with gr.Accordion("Rename or duplicate", open=False):
        new_slug = gr.Textbox(label="New slug", placeholder="e.g. my-happy", elem_id="lib-new-slug")
        with gr.Row():
            rename = gr.Button("Rename", size="sm", elem_id="lib-rename")
            duplicate = gr.Button("Duplicate", size="sm", elem_id="lib-duplicate")
    with gr.Accordion("Delete", open=False):
        confirm = gr.Checkbox(value=False, label="I understand this deletes the concept and its vectors",
                              elem_id="lib-confirm")
        delete = gr.Button("Delete selected concept", variant="stop", size="sm", elem_id="lib-delete")
    return dict(upload=upload, import_slug=import_slug, import_overwrite=import_overwrite, import_btn=import_btn,
                new_slug=new_slug, rename=rename, duplicate=duplicate, confirm=confirm, delete=delete)


def _wire(ctx: Any, h: LibraryHandlers, w: dict) -> None:
    """The events; every handler is a LibraryHandlers method."""
    filt = [w["search"], w["category"]]
    w["refresh"].click(guarded(h.list), filt, [w["table"]], api_name="library_list", queue=False).then(
        guarded(h.problems), None, [w["problems_md"]], queue=False, api_visibility="private")
    w["category"].change(guarded(h.list), filt, [w["table"]], api_visibility="private", queue=False)
    w["search"].submit(guarded(h.list), filt, [w["table"]], api_visibility="private", queue=False)
    w["table"].select(guarded(h.pick_row), None, [w["selected"]], api_visibility="private", queue=False)
    w["selected"].change(guarded(h.card), [w["selected"]], [w["card"], w["quality_plot"]], api_name="library_card",
                         queue=False)
    out = [w["export_file"], w["status"]]
    w["export_yaml"].click(guarded(h.export_yaml), [w["selected"]], out, api_name="library_export").success(
        None, None, None, js=DOWNLOAD_JS, queue=False)
    w["export_gguf"].click(guarded(h.export_gguf), [w[k] for k in ("selected", "gguf_layers", "gguf_strength",
                                                                   "gguf_relative")], out,
                           api_name="library_export_gguf", **MODEL_CONCURRENCY).success(
        None, None, None, js=DOWNLOAD_JS, queue=False)
    # Not in the model queue: a bundle is parsed and checked without the model; a GGUF import takes
    # the model lock only to measure typical norms (the service serialises that).
    changes = [
        w["import_btn"].click(guarded(h.import_file), [w["upload"], w["import_slug"], w["import_overwrite"], *filt],
                              [w["status"], w["table"], w["selected"]], api_name="library_import"),
        *(button.click(guarded(fn), [w["selected"], w["new_slug"], *filt],
                       [w["status"], w["table"], w["selected"], w["new_slug"]], api_name=api)
          for button, fn, api in ((w["rename"], h.rename, "library_rename"),
                                  (w["duplicate"], h.duplicate, "library_duplicate"))),
        w["delete"].click(guarded(h.delete), [w["selected"], w["confirm"], *filt],
                          [w["status"], w["table"], w["selected"], w["confirm"]], api_name="library_delete"),
    ]
    ctx.library_events.extend(changes)


def build(service: Any, ctx: Any) -> None:
    gr.Markdown(INTRO, elem_classes=["howto"])
    w = _browse_box(service)
    with gr.Row(equal_height=False):
        with gr.Column(scale=3, min_width=320):
            w["selected"] = gr.Dropdown(choices=_safe_choices(service), value=None, label="Selected concept",
                                        allow_custom_value=True, elem_id="lib-selected")
            w["card"] = gr.Markdown(NOTHING_SELECTED, elem_id="lib-card")
            w["quality_plot"] = gr.Plot(visible=False, show_label=False, elem_id="lib-quality-plot")
        with gr.Column(scale=2, min_width=300):
            w["status"] = gr.Markdown(elem_id="lib-status")
            w.update(_export_box(service))
            w.update(_change_boxes())
    _wire(ctx, LibraryHandlers(service), w)
    ctx.register("library", **{k: w[k] for k in ("search", "category", "table", "selected", "card", "status",
                                                  "export_file", "quality_plot", "gguf_layers")})


def _need(slug: Optional[str]) -> str:
    slug = (slug or "").strip()
    if not slug:
        raise gr.Error("Select a concept first (click a row in the table).", print_exception=False)
    return slug


def _need_new(slug: Optional[str]) -> str:
    slug = (slug or "").strip()
    if not slug:
        raise gr.Error("Type the new slug first (a-z, 0-9, - and _).", print_exception=False)
    return slug


def _safe_listing(service: Any):
    try:
        return listing(service)
    except Exception:
        log.exception("listing the library failed")
        return [], []


def _safe_choices(service: Any):
    try:
        return all_slug_choices(service)
    except Exception:
        log.exception("listing the library failed")
        return []


def wire(service: Any, ctx: Any) -> None:
    """Refresh the table when any tab is opened (another tab may have saved a concept)."""
    search, category, table, selected = (ctx.get(f"library.{k}") for k in ("search", "category", "table", "selected"))
    card_md, quality_plot = ctx.get("library.card"), ctx.get("library.quality_plot")
    h = LibraryHandlers(service)
    if ctx.tabs is not None:
        ctx.tabs.select(guarded(h.refresh), [search, category], [table, selected], api_visibility="private",
                        queue=False, show_progress="hidden")
        # queued with the model's jobs (the card reads the vector lens), so the table never waits for a run
        ctx.tabs.select(guarded(h.refresh_card), [selected], [card_md, quality_plot], api_visibility="private",
                        show_progress="hidden", **MODEL_CONCURRENCY)
