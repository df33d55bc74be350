"""Judge display (pure presentation): playground badge and prompted pane, sweep heatmaps, concept card."""

from __future__ import annotations

import json

from app.types import ComparisonChunk, Concept, ContrastPair, JudgeSpec
from app.ui.present import concepts as pc
from app.ui.present import generation as pg
from app.ui.present import sweeps as ps

JUDGE = {"kind": "sentiment", "label": "VADER sentiment (lower = sadder)", "sign": -1, "accuracy": None,
         "baseline": -0.5, "prompted": -0.2, "steered": 0.3, "prompted_change": 0.3, "steered_change": 0.8}


def _chunk(judge=JUDGE, prompted="I feel <b>blue</b> today."):
    return ComparisonChunk(baseline_text="base", steered_text="steer", baseline_pieces=["base"],
                           steered_pieces=["steer"], prompted_text=prompted, done=True,
                           stats={"steered_finish": "eos", "baseline_finish": "eos", "step": 3, "judge": judge})


def test_playground_status_shows_the_judge_of_each_row_and_the_prompted_text_escaped():
    view = pg.render_comparison(_chunk(), {"prompted_system": "Act as if you are <sad>."})
    s = view.status_html
    assert "steered moved it the right way (+0.800)" in s and "badge-ok" in s
    assert "baseline <b>-0.500</b>" in s and "prompted <b>-0.200</b>" in s and "steered <b>+0.300</b>" in s
    assert "steering beat prompting" in s
    assert "I feel &lt;b&gt;blue&lt;/b&gt; today." in s and "&lt;sad&gt;" in s and "<b>blue" not in s


def test_wrong_way_is_flagged_and_no_judge_means_no_line():
    wrong = dict(JUDGE, steered_change=-0.4)
    assert "WRONG way" in pg.render_comparison(_chunk(wrong), {}).status_html
    plain = pg.render_comparison(_chunk(None, None), {}).status_html
    assert "judge" not in plain and "Prompted instead" not in plain


def test_downloads_carry_prompted_text_and_judge():
    rec = pg.comparison_record(_chunk(), {}, "a prompt")
    assert rec["prompted"] == "I feel <b>blue</b> today." and rec["stats"]["judge"]["steered"] == 0.3
    md = pg.comparison_markdown(rec)
    assert "## Prompted" in md and "## Judge" in md and "steered +0.300" in md
    json.loads(pg.comparison_json(rec))


def sweep(judged=True):
    cells = []
    for l in (4, 8):
        for s in (0.1, 0.5):
            cells.append(dict(layer=l, strength=s, text=f"L{l} s{s}", n_tokens=3, finish="eos", concept_score=l * s,
                              perplexity=2.0, ppl_ratio=1.1, distinct2=0.9, longest_repeat=1, coherent=True,
                              degenerate=False, judge_score=(s - 0.3) * l if judged else None))
    return dict(layers=[4, 8], strengths=[0.1, 0.5], relative=True, read_layer=6, baseline_text="base", baseline={},
                cells=cells, recommended={"layer": 8, "strength": 0.5}, seconds=1.0, batches=1,
                judge={"kind": "sentiment", "label": "VADER sentiment", "prompted_change": 0.25} if judged else None,
                prompted_text="prompted text" if judged else None)


def test_sweep_heatmap_leads_with_the_judge_change():
    fig = ps.heatmap_figure(sweep())
    heat = [t for t in fig.data if t.type == "heatmap"]
    assert [t.name for t in heat] == ["judge_score", "concept_score", "ppl_ratio", "distinct2"]
    assert heat[0].z[1][1] == 8 * 0.2 and heat[0].zmid == 0
    assert "Moved along the vector" in fig.layout.annotations[1].text
    assert [t.name for t in ps.heatmap_figure(sweep(judged=False)).data if t.type == "heatmap"][0] == "concept_score"


def test_sweep_texts_show_judge_and_prompted_reference():
    data = sweep()
    md = ps.summary_markdown(data, "sad")
    assert "largest judge change" in md and "+0.250" in md
    cell = ps.cell_markdown(data, 8, 0.5)
    assert "judge change **+1.600**" in cell and "prompted text" in cell
    rows = ps.cells_table(data)
    assert len(rows[0]) == len(ps.TABLE_HEADERS) and rows[-1][2] == 1.6
    data["strengths"], data["cells"] = [0.5], [c for c in data["cells"] if c["strength"] == 0.5]
    line = ps.line_figure(data)
    assert any(getattr(s, "y0", None) == 0.25 for s in line.layout.shapes)  # the prompted reference line


def test_concept_card_names_the_judge_and_probe_accuracy():
    pairs = [ContrastPair("a", "b")] * 4
    c = Concept(slug="pirate", name="Pirate", pairs=pairs, judge=JudgeSpec("words", 1, words=("arr", "matey")))
    md = pc.concept_card_md(c, True, False, "ready", "m")
    assert "**Judge:** share of the answer's words in a list: arr, matey — higher = more pirate." in md
    probe = Concept(slug="x", name="X", pairs=pairs, judge=JudgeSpec("probe"))
    assert "Held-out accuracy **91%**" in pc.concept_card_md(probe, False, False, "", judge={"accuracy": 0.91})
    assert "none declared" in pc.judge_md(Concept(slug="y", name="Y", pairs=pairs))


def test_a_judge_at_its_ceiling_says_it_cannot_show_more():
    """'Tell me about your weekend.' scores VADER +0.97 unsteered: "steering did not change it" beside a visibly
    happier answer needs the reason next to it, in the playground and in the sweep summary."""
    full = dict(JUDGE, sign=1, label="VADER sentiment (higher = happier)", baseline=0.966, steered=0.966,
                steered_change=0.0, prompted_change=0.007)
    assert "little room to show more" in pg.judge_html(full)
    assert "little room" not in pg.judge_html(dict(full, baseline=0.2))
    assert "little room" not in pg.judge_html(dict(full, kind="wordlist", baseline=0.95))
    data = sweep()
    data["judge"].update(sign=1, baseline_raw=0.966)
    assert "+0.97 on this judge" in ps.summary_markdown(data, "happy")
    data["judge"].update(sign=-1, baseline_raw=0.966)  # sad: a happy baseline leaves all the room there is
    assert "little room" not in ps.summary_markdown(data, "sad")


def test_no_recommendation_advice_fits_the_sweep():
    data = sweep()
    for c in data["cells"]:
        c["judge_score"] = -0.1
    data["recommended"] = None
    assert "stronger settings" in ps.summary_markdown(data, "happy")
    data["cells"][-1].update(coherent=False)  # the strongest cell broke: stronger is the wrong advice
    md = ps.summary_markdown(data, "happy")
    assert "stronger settings" not in md and "between the coherent and the incoherent" in md


def test_sweep_panel_titles_fit_four_side_by_side():
    """Four panels on a 1280-px page leave ~280 px per title: long one-line titles ran into each other."""
    data = sweep()
    for fig in (ps.heatmap_figure(data), ps.line_figure(dict(data, layers=[4], cells=data["cells"][:2]))):
        titles = [a.text for a in fig.layout.annotations if a.text and a.text != "prompted"][:4]
        assert len(titles) == 4
        assert all(len(line) <= 40 for t in titles for line in t.split("<br>")), titles


def test_sweep_summary_counts_in_words():
    data = sweep()
    assert "(2 layers × 2 strengths," in ps.summary_markdown(data, "happy")
    one = dict(data, layers=[4], cells=[c for c in data["cells"] if c["layer"] == 4])
    assert "(1 layer × 2 strengths," in ps.summary_markdown(one, "happy")


def test_no_change_next_to_a_wrong_way_prompt_is_not_called_a_win():
    """An ablation that changed nothing (0) beside a prompt that moved the judge back (-0.05) beat nothing."""
    same = dict(JUDGE, steered_change=0.0, prompted_change=-0.052)
    s = pg.render_comparison(_chunk(same), {}).status_html
    assert "did not change it" in s and "steering beat prompting" not in s
    assert "neither steering nor prompting moved it the right way" in s
