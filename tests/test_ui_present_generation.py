"""Pure presentation of side-by-side runs and sweeps: HTML, colours, badges, downloads, figures, URL state."""

from __future__ import annotations

import json
import re
from types import SimpleNamespace

import pytest

from app.ui.present import generation as pg
from app.ui.present import sweeps as ps
from app.ui import urlstate


def chunk(**kw):
    base = dict(
        baseline_text="Hello there friend", steered_text="Hello there, happy",
        baseline_pieces=["Hello", " there", " friend"], steered_pieces=["Hello", " there", ",", " happy"],
        baseline_scores=[0.1, 0.2, 0.0], steered_scores=[0.1, 0.2, 1.5, 3.0],
        divergence=2, done=True,
        stats={"step": 4, "steered_finish": "eos", "baseline_finish": "length", "decode_tok_per_s": 12.5,
               "batch_rows": 2},
    )
    base.update(kw)
    return SimpleNamespace(**base)


SETTINGS = {"concept": "happy", "label": "happy", "layers": [{"layer": 12, "strength": 0.3, "coefficient": 1.2}],
            "strength_mode": "relative", "mode": "add", "guidance": 1.0, "schedule": "constant",
            "schedule_length": 16, "positions": "all", "source": "request", "model": "m", "max_tokens": 8,
            "temperature": 0.0, "top_p": 1.0, "seed": 0}


# ---- tokens -------------------------------------------------------------------------------
def test_script_is_escaped_in_tokens_and_titles():
    html = pg.tokens_html(["<script>alert(1)</script>", '" onmouseover="x'], [1.0, 2.0], None, pg.ColorScale(0, 1))
    assert "<script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert 'onmouseover="x' not in html  # the quote is escaped, so no attribute injection
    assert "&quot; onmouseover=&quot;x" in html


def test_markdown_and_json_carry_both_texts_escaped_safely():
    c = chunk(baseline_text="plain <b>base</b>", steered_text="steered <script>x</script>")
    rec = pg.comparison_record(c, SETTINGS, "my prompt", None)
    md = pg.comparison_markdown(rec)
    assert "plain <b>base</b>" in md and "steered <script>x</script>" in md  # a file, not HTML
    assert "my prompt" in md and "L12 @ 0.3" in md
    back = json.loads(pg.comparison_json(rec))
    assert back["baseline"] == c.baseline_text and back["steered"] == c.steered_text
    assert back["settings"]["layers"][0]["layer"] == 12
    assert back["divergence"] == 2


def test_colours_are_monotone_in_the_score():
    scale = pg.ColorScale(center=0.0, span=2.0)
    values = [-5, -2, -1.5, -0.5, 0, 0.25, 1, 1.9, 2, 7]

    def signed(v):
        r, g, b, a = pg.score_rgba(v, scale)
        return a if (r, g, b) == pg.POS_RGB else -a

    s = [signed(v) for v in values]
    assert s == sorted(s)
    assert signed(0) == 0 and signed(100) == pg.MAX_ALPHA and signed(-100) == -pg.MAX_ALPHA
    assert pg.score_rgba(float("nan"), scale)[3] == 0  # missing scores stay uncoloured


def test_colour_scale_centres_on_the_baseline():
    sc = pg.color_scale([1.0, 1.0, 1.0], [1.0, 3.0, 5.0])
    assert sc.center == pytest.approx(1.0)
    assert sc.span > 0
    assert sc.intensity(1.0) == 0
    assert pg.color_scale([], []).span == 1.0


def test_divergence_marker_on_the_right_token():
    html = pg.tokens_html(["a", "b", "c", "d"], [0, 0, 0, 0], divergence=2, scale=pg.ColorScale())
    spans = re.findall(r'<span class="([^"]+)"[^>]*>([^<]*)</span>', html)
    assert [t for _, t in spans] == ["a", "b", "c", "d"]
    assert [cls for cls, _ in spans] == ["tok", "tok", "tok tok-diverge", "tok tok-after"]
    assert html.count("tok-diverge") == 1
    none = pg.tokens_html(["a", "b"], [], divergence=None)
    assert "tok-diverge" not in none and "tok-after" not in none


def test_hover_title_carries_the_value():
    html = pg.tokens_html(["x"], [1.23456], None, pg.ColorScale())
    assert 'title="token 0 · projection +1.235"' in html
    assert "background:rgba(" in html


def test_render_comparison_fills_both_panes_and_status():
    view = pg.render_comparison(chunk(), SETTINGS, max_tokens=8)
    assert "friend" in view.baseline_html and "happy" in view.steered_html
    assert "tok-diverge" in view.baseline_html and "tok-diverge" in view.steered_html
    assert "badge-ok" in view.status_html and "12.5 tok/s" in view.status_html
    assert "L12 @ 0.3" in view.status_html and "token 4/8" in view.status_html


@pytest.mark.parametrize("finish,level,words", [
    ("eos", "ok", "OK"), ("length", "ok", "max tokens"), ("loop", "bad", "repetition loop"),
    ("nan", "bad", "NaN"), ("cancelled", "warn", "stopped"),
])
def test_badge_per_finish_reason(finish, level, words):
    got_level, text = pg.finish_badge({"steered_finish": finish}, done=True)
    assert got_level == level and words in text
    assert f"badge-{level}" in pg.badge_html(got_level, text)


def test_badge_while_generating_and_for_degenerate():
    assert pg.finish_badge({"steered_finish": ""}, done=False)[1].startswith("generating")
    assert pg.finish_badge({"steered_finish": "weird", "steered_degenerate": True}, True)[0] == "bad"


def test_visible_repetition_is_flagged_even_when_the_engine_says_length():
    loop = ["I", " am", " very", " happy", "!"] + [" I", " is", "!"] * 4
    fresh = ["My", " weekend", " was", " a", " mix", " of", " rest", " and", " fun", ",", " thanks", "."]
    assert pg.repeating_tail(loop) == 12 and pg.repeating_tail(fresh) == 0
    assert pg.looks_repetitive(loop) and not pg.looks_repetitive(fresh)
    level, text = pg.finish_badge({"steered_finish": "length"}, True, loop, fresh)
    assert level == "warn" and "repetitive" in text
    # when the baseline repeats too, it is not the steering's fault
    assert pg.finish_badge({"steered_finish": "length"}, True, loop, loop)[0] == "ok"
    assert pg.finish_badge({"steered_finish": "length"}, True, fresh, fresh)[0] == "ok"


def test_settings_text_mentions_non_defaults():
    s = dict(SETTINGS, mode="logits", guidance=2.0, schedule="pulse", schedule_length=4, positions="prompt",
             temperature=0.7, seed=3)
    text = pg.settings_text(s)
    for word in ("guidance 2", "pulse over 4", "prompt positions", "temperature 0.7", "seed 3"):
        assert word in text


def test_parse_layer_plan():
    assert pg.parse_layer_plan("16:0.2, 20:-0.1,") == [(16, 0.2), (20, -0.1)]
    assert pg.parse_layer_plan("") == []
    for bad in ("16", "x:0.2", "16:abc", "16:nan", "16:inf"):
        with pytest.raises(ValueError):
            pg.parse_layer_plan(bad)


def test_mix_text_round_trip():
    terms = pg.parse_mix_text("happy:0.7, excited:-0.3, calm")
    assert terms == [("happy", 0.7), ("excited", -0.3), ("calm", 1.0)]
    assert pg.format_mix_text(terms) == "happy:0.7, excited:-0.3, calm:1"
    assert pg.format_mix_text([("", 0.5), ("sad", 0.25)]) == "sad:0.25"
    for bad in ("happy:x", ":0.3", "happy:nan"):
        with pytest.raises(ValueError):
            pg.parse_mix_text(bad)


# ---- sweeps -------------------------------------------------------------------------------
def sweep_data():
    layers, strengths = [4, 8, 12], [0.1, 0.5]
    cells = []
    for l in layers:
        for s in strengths:
            cells.append(dict(layer=l, strength=s, text=f"text L{l} s{s} <b>", n_tokens=5, finish="length",
                              concept_score=l * s / 10, perplexity=2.0, ppl_ratio=1.0 + s, distinct2=1 - s / 2,
                              longest_repeat=1, coherent=not (l == 12 and s == 0.5), degenerate=False))
    return dict(layers=layers, strengths=strengths, relative=True, read_layer=8, baseline_text="base",
                baseline={}, cells=cells, recommended={"layer": 8, "strength": 0.5}, seconds=1.5, batches=1)


def test_heatmap_shapes_and_markers():
    data = sweep_data()
    fig = ps.heatmap_figure(data)
    heat = [t for t in fig.data if t.type == "heatmap"]
    assert len(heat) == 3
    for t in heat:
        assert len(t.z) == 3 and all(len(row) == 2 for row in t.z)  # layers x strengths
        assert t.text[1][1].startswith("★")  # recommended: L8, 0.5
        assert t.text[2][1].endswith("✕") and not t.text[0][0].endswith("✕")  # incoherent: L12, 0.5
    assert heat[0].z[2][1] == pytest.approx(0.6)  # L12, 0.5
    # the incoherent cell is hatched in each of the three panels, inside its own cell
    hatch = fig.layout.shapes
    assert len(hatch) > 0 and {s.xref for s in hatch} == {"x", "x2", "x3"}
    for s in hatch:
        assert 0.5 <= s.x0 <= 1.5 and 0.5 <= s.x1 <= 1.5 and 1.5 <= s.y0 <= 2.5 and 1.5 <= s.y1 <= 2.5


def test_no_recommended_marker_when_none():
    data = dict(sweep_data(), recommended=None)
    fig = ps.heatmap_figure(data)
    assert not any("★" in cell for t in fig.data for row in t.text for cell in row)
    assert "No recommended setting" in ps.summary_markdown(data, "happy")


def test_line_figure_for_one_dimensional_sweeps():
    data = sweep_data()
    data["strengths"] = [0.1]
    data["cells"] = [c for c in data["cells"] if c["strength"] == 0.1]
    data["recommended"] = {"layer": 8, "strength": 0.1}
    assert ps.is_one_dimensional(data)
    fig = ps.line_figure(data)
    lines = [t for t in fig.data if t.mode == "lines+markers"]
    assert len(lines) == 3 and list(lines[0].x) == [4, 8, 12]
    assert [t for t in fig.data if t.name == "recommended"]


def test_cells_table_cell_text_and_downloads():
    data = sweep_data()
    rows = ps.cells_table(data)
    assert len(rows) == 6 and len(rows[0]) == len(ps.TABLE_HEADERS)
    md = ps.cell_markdown(data, 8, 0.5)
    assert "★ recommended" in md and "text L8 s0.5 &lt;b&gt;" in md and "base" in md
    assert "incoherent" in ps.cell_markdown(data, 12, 0.5)
    rec = ps.sweep_record(data, "happy", "a prompt", 12)
    assert json.loads(ps.sweep_json(rec))["concept"] == "happy"
    smd = ps.sweep_markdown(rec)
    assert "Recommended (★): layer 8, strength 0.5" in smd and smd.count("\n| ") >= 6


def test_cosine_figure():
    fig = ps.cosine_figure(["happy", "sad"], [[1.0, 0.7], [0.7, 1.0]], 12)
    assert fig.data[0].type == "heatmap" and list(fig.data[0].x) == ["happy", "sad"]
    assert "layer 12" in fig.layout.title.text


# ---- URL state ----------------------------------------------------------------------------
def test_a_link_with_only_a_concept_opens_at_its_recommended_setting():
    calls = []

    def recommend(concept):
        calls.append(concept)
        return (18, 0.25, True, "★ recommended for sad: layer 18 — calibrated")

    p = urlstate.fill_recommended({"concept": "sad"}, recommend)
    assert (p["layer"], p["strength"], p["abs"]) == (18, 0.25, False) and "recommended" in p["_layer_info"]
    p = urlstate.fill_recommended({"concept": "sad", "layer": 5}, recommend)  # the link's own layer wins
    assert (p["layer"], p["strength"]) == (5, 0.25) and "_layer_info" not in p
    p = urlstate.fill_recommended({"concept": "sad", "strength": -0.5}, recommend)
    assert (p["layer"], p["strength"]) == (18, -0.5)
    p = urlstate.fill_recommended({"concept": "sad", "abs": True}, recommend)  # absolute asked: no relative value
    assert p["layer"] == 18 and "strength" not in p and p["abs"] is True
    calls.clear()
    both = {"concept": "sad", "layer": 5, "strength": 0.1}
    assert urlstate.fill_recommended(both, recommend) == both and calls == []  # nothing to look up
    assert urlstate.fill_recommended({"layer": 5}, recommend) == {"layer": 5} and calls == []
    assert urlstate.fill_recommended({"concept": "nosuch"}, lambda c: None) == {"concept": "nosuch"}


def test_link_updates_for_the_playground_with_and_without_settings():
    """A plain page (no query) or a link with only a tab must update the playground too (the strength range),
    never fail because a setting is missing."""
    from types import SimpleNamespace

    svc = SimpleNamespace(operations=lambda: [])
    plain = urlstate.playground_updates(svc, {})
    assert len(plain) == len(urlstate._PG_ORDER)
    assert plain[1] == {"__type__": "update"} and plain[2]["maximum"] == 1.0 and "value" not in plain[2]
    p = urlstate.fill_recommended({"concept": "sad"}, lambda c: (18, 0.25, True, "★ recommended for sad: layer 18"))
    ups = urlstate.playground_updates(svc, p)
    assert ups[1]["value"] == 18 and "recommended" in ups[1]["info"]
    assert ups[2]["value"] == 0.25 and "recommended strength" in ups[2]["info"] and ups[3]["value"] is False


def test_url_params_validated():
    known = {"happy", "sad"}
    s = urlstate.read_params({"tab": "playground", "concept": "sad", "layer": "14", "strength": "0.25",
                              "prompt": "Hi", "seed": "7", "temp": "0.5", "max_tokens": "40"}, 30, known)
    assert s["tab"] == "playground"
    assert s["playground"] == {"concept": "sad", "layer": 14, "strength": 0.25, "prompt": "Hi", "seed": 7,
                               "temp": 0.5, "max_tokens": 40}
    bad = urlstate.read_params({"tab": "../etc", "concept": "nosuch", "layer": "99", "strength": "nan",
                                "seed": "-1", "temp": "inf", "max_tokens": "1000000000", "layers": "1;drop",
                                "strengths": "0.1,abc", "prompt": "x" * 5000}, 30, known)
    assert bad["tab"] is None and bad["playground"] == {} and bad["sweeps"] == {}
    mix = urlstate.read_params({"concept": "happy:0.7,sad:0.3", "abs": "1", "strength": "5"}, 30, known)
    assert mix["playground"] == {"concept": "happy:0.7,sad:0.3", "abs": True, "strength": 5.0}
    assert urlstate.read_params({"strength": "5"}, 30, known)["playground"] == {}  # relative range is -1..1
    sw = urlstate.read_params({"tab": "sweeps", "layers": "4-20", "strengths": "0.1, 0.2,0.3", "max_tokens": "12"},
                              30, known)
    assert sw["sweeps"] == {"layers": "4-20", "strengths": "0.1, 0.2,0.3", "max_tokens": 12}
