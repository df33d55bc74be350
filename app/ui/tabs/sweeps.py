"""Sweeps: try many layers x strengths at once, score every cell, and keep the best setting."""

from __future__ import annotations

from typing import Any, Iterator, Optional

import gradio as gr

from app.domain import limits
from app.domain.parse import parse_floats, parse_layers
from app.domain.requests import SweepRequest
from app.errors import Cancelled
from app.service.lab import follow
from app.ui.context import MODEL_CONCURRENCY
from app.ui.downloads import out_dir
from app.ui.errors import error_note, guarded, shows_error
from app.ui.present import sweeps as present
from app.ui.streaming import arm_session, session_id, stop_session, throttled
from app.ui.widgets import (ABS_RANGE, REL_RANGE, check_concept, check_number, check_prompt, concept_choices,
                            default_concept, default_layer, file_stem, gen_params, mark_stale_on, num_layers)

LABEL = "Sweeps"  # this module is a tab (app.ui.tabs): its title ...
ORDER = 50  # ... and its place on the page

MAX_SWEEP_TOKENS = limits.SWEEP_MAX_TOKENS
DEFAULT_SWEEP_TOKENS = limits.DEFAULT_SWEEP_TOKENS
KINDS = ("layer sweep", "strength sweep", "grid")

HOWTO = (
    "A sweep runs one steered answer per cell (layer × strength) in a few batches and scores each with the unsteered "
    "model: **concept score** (how far the text moved toward the concept), **perplexity ratio** (≈1 means as plausible "
    "as the baseline; far below 1 usually means the text repeats itself, which is easy to predict) and **distinct-2** "
    "(low means repetition). ✕ marks incoherent cells (click one: its verdict says which rule decided), ★ the "
    "recommended one. "
    "Pick a cell below to read its text, then send it to the playground or save it as the concept's recommendation."
)


def kind_defaults(kind: str, n_layers: int, center_layer: Optional[int] = None) -> tuple[str, str]:
    """Sensible (layers, strengths) text for each kind of sweep on a model with ``n_layers`` layers."""
    mid = default_layer(n_layers) if center_layer is None else center_layer
    if kind == "layer sweep":
        lo, hi = max(1, n_layers // 8), max(1, n_layers - n_layers // 8 - 1)
        step = max(1, (hi - lo) // 5)
        return ",".join(str(l) for l in range(lo, hi + 1, step)), "0.3"
    if kind == "strength sweep":
        return str(mid), "0.1,0.2,0.3,0.5,0.8"
    q = max(1, n_layers // 5)
    layers = sorted({min(n_layers - 1, max(0, mid + d)) for d in (-q, 0, q)})
    return ",".join(str(l) for l in layers), "0.1,0.2,0.3,0.5"


def _cell_choices(data: dict) -> list[tuple[str, str]]:
    out = []
    for c in data.get("cells") or []:
        flag = "" if c.get("coherent") else "  ✕"
        out.append((present.cell_label(c["layer"], c["strength"]) + flag, f"{int(c['layer'])}|{float(c['strength'])!r}"))
    return out


def _parse_cell(value: Any) -> Optional[tuple[int, float]]:
    try:
        a, b = str(value).split("|", 1)
        return int(a), float(b)
    except (ValueError, AttributeError):
        return None


def _default_cell(data: dict) -> Optional[str]:
    rec = present.recommended_cell(data)
    if rec is not None:
        return f"{rec[0]}|{rec[1]!r}"
    cells = data.get("cells") or []
    return f"{int(cells[0]['layer'])}|{float(cells[0]['strength'])!r}" if cells else None


def kind_of(layers_text: Any, strengths_text: Any) -> Optional[str]:
    """Which kind of sweep the typed lists describe (None while they do not parse)."""
    from app.errors import InputError

    try:
        n_layers = len(parse_layers(str(layers_text or "")))
        n_strengths = len(parse_floats(str(strengths_text or "")))
    except InputError:
        return None
    if n_layers == 1:
        return "strength sweep"
    return "layer sweep" if n_strengths == 1 else "grid"


def kind_update(layers_text: Any, strengths_text: Any) -> Any:
    kind = kind_of(layers_text, strengths_text)
    return gr.update() if kind is None else gr.update(value=kind)


def error_outputs(exc: BaseException) -> tuple:
    """Old results cleared and the error written in their place, so it stays until the next run."""
    return (None, error_note(exc, "The sweep did not run"), None, gr.Plot(value=None, visible=False), None, gr.Dropdown(choices=[], value=None),
            "Fix the input above and press **Run sweep** again.",
            gr.DownloadButton(value=None, interactive=False), gr.DownloadButton(value=None, interactive=False))


class SweepsHandlers:
    """The sweeps tab's events as plain methods over the lab, so tests call them without a server."""

    def __init__(self, service: Any) -> None:
        self.service = service

    def prefill(self, kind_v) -> tuple[str, str]:
        return kind_defaults(kind_v, num_layers(self.service))

    def sweep(self, concept, prompt, layers, strengths, max_tokens, absolute, op="add", repetition_penalty=1.0,
              request: gr.Request = None, progress=gr.Progress()) -> Iterator[tuple]:
        """(state, summary, heatmap, lines, table, cell, cell text, md, json): ticks while it runs, then the results."""
        service = self.service
        prompt = check_prompt(prompt)
        concept = check_concept(concept)
        layer_list = parse_layers(layers, num_layers(service), "layers")
        op_name = op or "add"
        # other operations: their values are a / t / theta, checked against the operation's range by the service
        strength_list = parse_floats(strengths, "strengths", limits.strength_limit(not absolute) if op_name == "add" else limits.op_param_limit(op_name))
        mt = int(check_number(max_tokens, "max tokens", limits.SWEEP_MIN_TOKENS, MAX_SWEEP_TOKENS, integer=True))
        n_cells = len(layer_list) * len(strength_list)
        progress(0.0, desc=f"preparing {n_cells} cells…")

        def report(done: int, total: int, desc: str) -> None:
            progress((done, max(total, 1)), desc=f"{n_cells} cells · {desc}", unit="steps")

        req = SweepRequest(prompt, concept, tuple(layer_list), tuple(strength_list),
                           gen_params(mt, repetition_penalty=repetition_penalty), relative=not absolute, op=op_name)
        session = session_id(request)
        token = service.start(session)
        result = None
        try:  # a generator: a client that leaves closes it, which cancels the sweep
            for step, value in follow(lambda: service.sweep(req, progress=throttled(report), token=token), token):
                if token.cancelled:  # Stop acts at once; the sweep itself ends at its next check
                    break
                if step == "wait":
                    progress(0.0, desc=f"waiting: {value} job{'s' if value != 1 else ''} ahead")
                if step == "done":
                    result = value
                else:
                    yield (gr.skip(),) * 9
        except Cancelled:
            result = None
        finally:
            service.finish(session, token)
        if result is None or token.cancelled:
            keep = [gr.update() for _ in range(7)]
            yield (gr.update(), "**Sweep stopped** — nothing was scored. Run it again when you are ready.", *keep)
            return
        yield sweep_results(result, concept, prompt, mt)

    @staticmethod
    def show_cell(data, cell) -> str:
        cell_v = _parse_cell(cell)
        if not data or cell_v is None:
            return "Run a sweep, then pick a cell to read its text."
        return present.cell_markdown(data, *cell_v)

    @staticmethod
    def table_select(data, evt: gr.SelectData) -> Any:
        if not data:
            return gr.update()
        row = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
        cells = data.get("cells") or []
        if not isinstance(row, int) or not 0 <= row < len(cells):
            return gr.update()
        c = cells[row]
        return gr.Dropdown(value=f"{int(c['layer'])}|{float(c['strength'])!r}")

    def save_recommendation(self, data, cell, concept, absolute) -> str:
        cell_v = _parse_cell(cell)
        if not data or cell_v is None:
            raise gr.Error("Run a sweep and pick a cell first.", print_exception=False)
        concept_v = check_concept(data.get("concept") or concept)
        if (data.get("op") or "add") != "add":
            raise gr.Error(f"A recommendation stores a strength for add; this sweep varied {data['op']}'s parameter.",
                           print_exception=False)
        self.service.concepts.save_recommendation(concept_v, cell_v[0], cell_v[1],
                                                  relative=bool(data.get("relative", True)), source="sweep")
        return (f"Saved: **{concept_v}** now recommends layer {cell_v[0]}, strength {cell_v[1]:g} "
                f"({'relative' if data.get('relative', True) else 'absolute'}) for this model.")


def sweep_results(result: Any, concept: str, prompt: str, max_tokens: int) -> tuple:
    """A finished sweep's outputs; its Markdown and JSON are written for the download buttons."""
    data = present.as_sweep_dict(result)
    record = present.sweep_record(data, concept, prompt, max_tokens)
    folder = out_dir("sweep")
    stem = f"sweep-{file_stem(concept)}"
    (folder / f"{stem}.md").write_text(present.sweep_markdown(record), encoding="utf-8")
    (folder / f"{stem}.json").write_text(present.sweep_json(record), encoding="utf-8")
    one_d = present.is_one_dimensional(data)
    first = _default_cell(data)
    first_cell = _parse_cell(first)
    return (
        record,
        present.summary_markdown(data, concept),
        present.heatmap_figure(data),
        gr.Plot(value=present.line_figure(data) if one_d else None, visible=one_d),
        present.cells_table(data),
        gr.Dropdown(choices=_cell_choices(data), value=first),
        present.cell_markdown(data, *first_cell) if first_cell else "",
        gr.DownloadButton(value=str(folder / f"{stem}.md"), interactive=True),
        gr.DownloadButton(value=str(folder / f"{stem}.json"), interactive=True),
    )


def _setup_box(service: Any, n: int) -> dict:
    """What to sweep: prompt, layers, strengths, concept, kind, tokens, operation."""
    layers0, strengths0 = kind_defaults("grid", n)
    with gr.Row(equal_height=False):
        with gr.Column(scale=3, min_width=300):
            prompt = gr.Textbox(label="Prompt", value="Tell me about your weekend.", lines=2, max_lines=8,
                                elem_id="sw-prompt")
            with gr.Row():
                layers = gr.Textbox(label="Layers", value=layers0, info="e.g. 4-20 or 6,10,14", elem_id="sw-layers")
                strengths = gr.Textbox(label="Strengths", value=strengths0, info="comma-separated, e.g. 0.1,0.2,0.3",
                                       elem_id="sw-strengths")
        with gr.Column(scale=2, min_width=280):
            concept = gr.Dropdown(choices=concept_choices(service), value=default_concept(service), label="Concept",
                                  allow_custom_value=True, filterable=True, elem_id="sw-concept")
            kind = gr.Radio(list(KINDS), value="grid", label="Kind of sweep",
                            info="Fills in sensible layers and strengths", elem_id="sw-kind")
            with gr.Row():
                max_tokens = gr.Slider(limits.SWEEP_MIN_TOKENS, MAX_SWEEP_TOKENS, value=DEFAULT_SWEEP_TOKENS, step=1, label="Max tokens",
                                       elem_id="sw-max-tokens")
                absolute = gr.Checkbox(value=False, label="Absolute strengths", elem_id="sw-absolute")
            ops = [o for o in service.operations() if o.hook_point == "residual"]
            op = gr.Dropdown([(f"{o.name} (sweeps {o.param})", o.name) for o in ops], value="add", label="Operation",
                             elem_id="sw-op", info="For ablate/cap/clamp/rotate the strengths are its a / t / theta")
            repetition_penalty = gr.Slider(1.0, limits.REPETITION_PENALTY_MAX, value=1.0, step=0.05,
                                           label="Repetition penalty", elem_id="sw-repetition-penalty",
                                           info="1 = off; ~1.15 stops a base model repeating its lines (every cell)")
    return dict(prompt=prompt, layers=layers, strengths=strengths, concept=concept, kind=kind, max_tokens=max_tokens,
                absolute=absolute, op=op, repetition_penalty=repetition_penalty)


def _results_box() -> dict:
    """Run / Stop, the heatmaps, the cell table and the picked cell's text."""
    with gr.Row():
        run = gr.Button("Run sweep", variant="primary", elem_id="sw-run", scale=3)
        stop = gr.Button("Stop", variant="stop", elem_id="sw-stop", scale=1)
    summary = gr.Markdown("", elem_id="sw-summary")
    heatmap = gr.Plot(label="Heatmaps (rows = layers, columns = strengths)", elem_id="sw-heatmap")
    lines = gr.Plot(label="Along the sweep", visible=False, elem_id="sw-lines")
    state = gr.State(None)
    with gr.Row(equal_height=False):
        with gr.Column(scale=3, min_width=300):
            table = gr.Dataframe(headers=present.TABLE_HEADERS, value=None, interactive=False, wrap=True,
                                 column_widths=present.TABLE_WIDTHS,
                                 label="Cells (click a row to read it) · judge Δ = the judge's change vs the baseline, vector = moved along the concept's own vector, ppl× = perplexity ratio, d-2 = distinct-2", elem_id="sw-table", max_height=360)
        with gr.Column(scale=2, min_width=280):
            cell = gr.Dropdown(choices=[], value=None, label="Cell", elem_id="sw-cell",
                               info="★ the recommended cell is picked first")
            cell_md = gr.Markdown("Run a sweep, then pick a cell to read its text.", elem_id="sw-cell-text")
            with gr.Row():
                use = gr.Button("Use this setting in the playground", elem_id="sw-use", size="sm")
                save = gr.Button("Save as recommended", elem_id="sw-save", size="sm")
            saved = gr.Markdown("", elem_id="sw-saved")
    with gr.Row():
        dl_md = gr.DownloadButton("Download Markdown", value=None, interactive=False, size="sm", elem_id="sw-dl-md")
        dl_json = gr.DownloadButton("Download JSON", value=None, interactive=False, size="sm", elem_id="sw-dl-json")

    return dict(run=run, stop=stop, summary=summary, heatmap=heatmap, lines=lines, state=state, table=table,
                cell=cell, cell_md=cell_md, use=use, save=save, saved=saved, dl_md=dl_md, dl_json=dl_json)


def _wire(service: Any, h: SweepsHandlers, w: dict) -> None:
    """The events; every handler is a SweepsHandlers method (tested without a server)."""
    layers, strengths = w["layers"], w["strengths"]
    w["kind"].input(guarded(h.prefill), [w["kind"]], [layers, strengths], api_visibility="private", queue=False)
    for box in (layers, strengths):  # typed, filled by the tutorial or read from a link: the kind follows
        box.change(guarded(kind_update), [layers, strengths], [w["kind"]], api_visibility="private", queue=False,
                   show_progress="hidden")
    w["run"].click(guarded(arm_session(service)), None, None, queue=False, show_progress="hidden",
                   api_visibility="private").then(
        guarded(shows_error(error_outputs)(h.sweep)),
        [w[k] for k in ("concept", "prompt", "layers", "strengths", "max_tokens", "absolute", "op", "repetition_penalty")],
        [w[k] for k in ("state", "summary", "heatmap", "lines", "table", "cell", "cell_md", "dl_md", "dl_json")],
        api_name="sweep", show_progress="full", show_progress_on=[w["heatmap"]], **MODEL_CONCURRENCY)
    w["stop"].click(guarded(stop_session(service)), None, None, api_name="stop_sweep", queue=False)
    mark_stale_on([w[k] for k in ("prompt", "concept", "layers", "strengths", "max_tokens", "absolute",
                                  "repetition_penalty")],
                  ["sw-heatmap", "sw-table"], [w["run"]])
    w["cell"].change(guarded(h.show_cell), [w["state"], w["cell"]], [w["cell_md"]], api_name="sweep_cell", queue=False)
    w["table"].select(guarded(h.table_select), [w["state"]], [w["cell"]], api_visibility="private", queue=False)
    w["save"].click(guarded(h.save_recommendation), [w["state"], w["cell"], w["concept"], w["absolute"]], [w["saved"]],
                    api_name="save_recommendation")


def build(service: Any, ctx: Any) -> None:
    gr.Markdown(HOWTO, elem_classes=["howto"])
    w = {**_setup_box(service, num_layers(service)), **_results_box()}
    _wire(service, SweepsHandlers(service), w)
    ctx.register("sweeps", **{k: w[k] for k in ("prompt", "concept", "layers", "strengths", "run", "max_tokens",
                                                 "absolute", "kind", "state", "cell", "use", "stop", "heatmap",
                                                 "summary", "op")})


def use_setting_updates(service: Any, data: Any, cell: Any) -> list:
    """Playground updates for (prompt, concept, layer, strength, absolute, op, op_param, advanced) from a cell.

    For add the cell's value is the strength; for another operation it is that operation's parameter, so it goes
    to the operation fields (the advanced section opens to show them) and the strength slider is left alone."""
    from app.ui.tabs.operations import op_param_props, op_param_update

    cell_v = _parse_cell(cell)
    if not data or cell_v is None:
        raise gr.Error("Run a sweep and pick a cell first.", print_exception=False)
    layer, value = cell_v
    op = data.get("op") or "add"
    relative = bool(data.get("relative", True))
    lim = REL_RANGE if relative else ABS_RANGE
    common = [gr.update(value=data.get("prompt") or ""), gr.update(value=data.get("concept") or ""),
              gr.update(value=layer, info=f"from the sweep: layer {layer}")]
    if op == "add":
        return common + [gr.update(minimum=-lim, maximum=lim, value=value), gr.update(value=not relative),
                         gr.update(value="add"), op_param_update(service, "add"), gr.update()]
    props = op_param_props(service, op)
    return common + [gr.update(), gr.update(), gr.update(value=op),
                     gr.Textbox(value=f"{value:g}", label=props["label"], info=f"from the sweep: {value:g}. {props['info']}"),
                     gr.Accordion(open=True)]


def wire(service: Any, ctx: Any) -> None:
    """'Use this setting': copy the picked cell's layer and strength (or operation parameter) to the playground."""
    use = ctx.get("sweeps.use")
    keys = ("prompt", "concept", "layer", "strength", "absolute", "op", "op_param", "advanced")
    outputs = [ctx.get(f"playground.{k}") for k in keys]

    @guarded
    def use_setting(data, cell):
        return [*use_setting_updates(service, data, cell), gr.Tabs(selected="playground")]

    if ctx.tabs is not None:
        outputs.append(ctx.tabs)
        fn = use_setting
    else:  # pragma: no cover - build_app always sets tabs
        fn = guarded(lambda d, v: use_setting(d, v)[:-1])
    use.click(fn, [ctx.get("sweeps.state"), ctx.get("sweeps.cell")], outputs, api_name="use_setting")
