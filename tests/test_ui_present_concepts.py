"""Pure presentation functions of the explorer, creator and library (no server, no model)."""

from __future__ import annotations

import json

import numpy as np
import plotly.graph_objects as go
import pytest

from app.library import ConceptLibrary
from app.types import Concept, ConceptVectors, ContrastPair, LayerQuality, Recommendation
from app.ui.present import common, concepts, explorer
from app.ui.present.explorer import cosine_by_layer


# ---- fixtures ---------------------------------------------------------------------------------

class FakeExploration:
    def __init__(self, L=4, T=5, projections=True, seed=0):
        rng = np.random.default_rng(seed)
        self.tokens = ["<s>", " The", " cat", " the", " the"][:T] + [f"t{i}" for i in range(max(0, T - 5))]
        self.norms = rng.uniform(5, 50, size=(L, T))
        self.norms[:, 0] = 800.0
        self.lens_top = [[[(f" w{l}{t}", 0.6), (" x", 0.2), (" y", 0.1), (" z", 0.05), (" q", 0.01)] for t in range(T)]
                         for l in range(L)]
        self.lens_top[-1][-1] = [(" Paris", 0.9), (" the", 0.05), (" a", 0.02), (" P", 0.01), (" L", 0.01)]
        if L > 1:
            self.lens_top[L - 2][-1] = [(" Paris", 0.4), (" the", 0.3), (" a", 0.1), (" P", 0.1), (" L", 0.01)]
        self.projections = rng.normal(size=(L, T)) if projections else None
        if projections:
            self.projections[:, 0] = 500.0
        self.concept = "happy" if projections else ""
        self.typical_norms = np.linspace(10, 40, L) if projections else None
        self.extra = {"recommended_layers": (1, 2)} if projections else {}


def make_cv(L=6, H=8, n_pairs=4, with_quality=True, rec=(2, 3), nan_layer=None):
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(L, H)).astype(np.float32)
    typical = np.linspace(10, 60, L).astype(np.float32)
    quality = []
    if with_quality:
        for l in range(L):
            quality.append(LayerQuality(layer=l, vector_norm=float(np.linalg.norm(vectors[l])),
                                        typical_norm=float(typical[l]), d_prime=0.5 + l, loo_accuracy=min(1.0, 0.5 + 0.1 * l),
                                        pc1_share=0.6))
        if nan_layer is not None:
            quality[nan_layer].d_prime = float("nan")
    return ConceptVectors(model_id="test/model", model_fingerprint="abc", method="mean_diff", vectors=vectors,
                          typical_norms=typical, quality=quality, recommended_layers=rec,
                          extra={"n_pairs": n_pairs, "seconds": 1.25})


def _json_ok(fig: go.Figure) -> None:
    json.loads(fig.to_json())  # NaN would make strict consumers fail; plotly must serialise it


# ---- common -----------------------------------------------------------------------------------

def test_common_helpers():
    assert common.fmt(float("nan")) == "n/a"
    assert common.fmt(3.14159) == "3.14"
    assert common.pct(0.875) == "88%"
    assert common.show_token(" the") == "·the"
    assert common.show_token("\n") == "↵"
    labels = common.token_axis_labels([" the", " the", "\n"])
    assert len(set(labels)) == 3 and labels[0].startswith("0 ")
    assert common.md_escape("a*b_c|d") == "a\\*b\\_c\\|d"


def test_parse_layer_spec():
    assert common.parse_layer_spec("8-10, 12", 30) == [8, 9, 10, 12]
    assert common.parse_layer_spec("", 30) == []
    assert common.parse_layer_spec("3, 3, 4") == [3, 4]
    with pytest.raises(ValueError, match="does not exist"):
        common.parse_layer_spec("40", 30)
    with pytest.raises(ValueError, match="backwards"):
        common.parse_layer_spec("9-3", 30)
    with pytest.raises(ValueError, match="not a whole number"):
        common.parse_layer_spec("abc", 30)


# ---- explorer ---------------------------------------------------------------------------------

def test_norms_figure_separates_position_zero():
    ex = FakeExploration(L=4, T=5)
    fig = explorer.norms_figure(ex)
    names = [t.name for t in fig.data]
    assert any("position 0" in n for n in names) and any("without position 0" in n for n in names)
    mean_trace = fig.data[0]
    assert list(mean_trace.x) == [0, 1, 2, 3]
    np.testing.assert_allclose(mean_trace.y, ex.norms[:, 1:].mean(axis=1))
    assert fig.data[1].y[0] == 800.0
    assert fig.layout.yaxis.type == "log"
    assert "norm" in fig.layout.title.text.lower()
    assert fig.layout.xaxis.title.text and fig.layout.yaxis.title.text
    assert len(fig.data) == 3  # typical norms of the concept too
    _json_ok(fig)


def test_norm_heatmap_log_scale_and_unique_columns():
    ex = FakeExploration(L=3, T=5)
    fig = explorer.norm_heatmap_figure(ex)
    hm = fig.data[0]
    assert isinstance(hm, go.Heatmap)
    z = np.array(hm.z, dtype=float)
    assert z.shape == (3, 5)
    np.testing.assert_allclose(z, np.log10(ex.norms))
    assert len(set(hm.x)) == 5  # three " the"-like tokens stay separate columns
    assert hm.customdata is not None and "norm" in hm.hovertemplate
    assert "log" in fig.layout.title.text


def test_lens_figure_and_table():
    ex = FakeExploration(L=4, T=5)
    fig = explorer.lens_figure(ex)
    hm = fig.data[0]
    assert np.array(hm.z, dtype=float).shape == (4, 5)
    assert hm.text[3][4] == "·Paris"
    assert "top next tokens" in hm.hovertemplate
    rows = explorer.lens_last_rows(ex)
    assert len(rows) == 4 and rows[0][0] == 3  # deepest layer first
    assert rows[0][1].startswith("·Paris") and "90%" in rows[0][1]
    assert len(rows[0]) == len(explorer.LENS_TABLE_HEADERS)


def test_projection_figure_is_diverging_and_centered():
    ex = FakeExploration(L=4, T=5)
    fig = explorer.projection_figure(ex)
    hm = fig.data[0]
    assert hm.zmid == 0.0 and hm.zmin == -hm.zmax
    assert hm.zmax < 500 / 40  # scaled without position 0 (the attention sink)
    np.testing.assert_allclose(np.array(hm.z, dtype=float), ex.projections / ex.typical_norms[:, None])
    assert np.array(hm.customdata, dtype=float)[0, 0] == 500.0  # raw value in the hover
    assert "happy" in fig.layout.title.text
    assert any("recommended" in (a.text or "") for a in fig.layout.annotations)


def test_projection_figure_without_concept_says_what_to_do():
    fig = explorer.projection_figure(FakeExploration(projections=False))
    assert len(fig.data) == 0
    assert "Choose a concept" in fig.layout.annotations[0].text


def test_explore_summary_mentions_numbers():
    ex = FakeExploration(L=4, T=5)
    md = explorer.explore_summary_md(ex)
    assert "5 tokens × 4 layers" in md
    assert "Paris" in md and "90%" in md
    assert "first ranks it top at **layer 2**" in md  # layer 2 already has " Paris" on top
    assert "1–2" in md  # recommended layers


def test_explore_summary_names_the_first_layer_of_the_word_with_or_without_its_space():
    """The tutorial asks for the layer where the lens first predicts the answer's first word, with or without its
    leading space: SmolLM2's final `The` is top as `·The` from layer 20 on, but exactly only at layer 29."""
    ex = FakeExploration(L=6, T=5)
    ex.lens_top[-1][-1] = [("The", 0.15), (" the", 0.1), (" a", 0.02), (" P", 0.01), (" L", 0.01)]
    ex.lens_top[-2][-1] = [(" the", 0.4), (" The", 0.3), (" a", 0.1), (" P", 0.1), (" L", 0.01)]
    ex.lens_top[2][-1] = [(" The", 0.3), (" the", 0.2), (" a", 0.1), (" P", 0.1), (" L", 0.01)]
    md = explorer.explore_summary_md(ex)
    assert "first ranks it top at **layer 5**" in md
    assert "**`·The`**, already at **layer 2**" in md
    ex.lens_top[2][-1] = [(" x", 0.3)] * 5  # no earlier spelling: nothing more is said
    assert "other spacing" not in explorer.explore_summary_md(ex)
    assert "raw bytes" not in explorer.explore_summary_md(ex)
    ex.lens_top[-1][-1] = [("<0xF0><0x9F>", 0.11)] * 5  # an emoji's first bytes: the hex is explained
    assert "`<0xF0><0x9F>`" in explorer.explore_summary_md(ex) and "raw bytes" in explorer.explore_summary_md(ex)


def test_explorer_edge_cases_one_layer_one_token_and_nan():
    ex = FakeExploration(L=1, T=1)
    for fn in (explorer.norms_figure, explorer.norm_heatmap_figure, explorer.lens_figure, explorer.projection_figure):
        _json_ok(fn(ex))
    assert explorer.explore_summary_md(ex).startswith("**1 tokens × 1 layers")
    ex = FakeExploration(L=3, T=4)
    ex.norms[1, 2] = np.nan
    ex.projections[:, 1:] = np.nan
    fig = explorer.norm_heatmap_figure(ex)
    assert fig.data[0].z[1][2] is None
    _json_ok(fig)
    _json_ok(explorer.projection_figure(ex))
    _json_ok(explorer.norms_figure(ex))
    explorer.explore_summary_md(ex)  # no crash on all-NaN projections


def test_cosine_by_layer_and_figure():
    a = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    b = np.array([[1.0, 0.0], [-1.0, -1.0], [1.0, 0.0]])
    cos = cosine_by_layer(a, b)
    assert cos[0] == pytest.approx(1.0) and cos[1] == pytest.approx(-1.0) and np.isnan(cos[2])
    fig = explorer.cosine_figure(cos, "happy", "sad", recommended=(0, 1))
    assert fig.data[0].y[2] is None
    assert "happy" in fig.layout.title.text and fig.layout.yaxis.title.text == "cosine similarity"
    _json_ok(fig)
    md = explorer.cosine_summary_md(cos, "happy", "sad")
    assert "1.00" in md
    with pytest.raises(ValueError, match="differ in shape"):
        cosine_by_layer(a, b[:, :1])


# ---- creator: pairs ------------------------------------------------------------------------------

def test_parse_pasted_pairs_pipe_and_tab():
    text = "I'm thrilled! | I'm here.\n\n# comment\nSo happy\tNeutral\nno separator here\na | b | c\n | only neg"
    pairs, problems = concepts.parse_pasted_pairs(text)
    assert pairs == [ContrastPair("I'm thrilled!", "I'm here."), ContrastPair("So happy", "Neutral")]
    assert len(problems) == 3
    assert "line 5" in problems[0] and "line 6" in problems[1] and "line 7" in problems[2]


def test_table_to_pairs_skips_blank_rows_and_reports_half_rows():
    table = [["a", "b"], ["", ""], ["c", ""], [None, None], ["d", "e"]]
    pairs, problems = concepts.table_to_pairs(table)
    assert pairs == [ContrastPair("a", "b"), ContrastPair("d", "e")]
    assert problems == ["row 3: the negative text is empty (every pair needs both sides)"]
    assert concepts.table_to_pairs({"headers": ["positive", "negative"], "data": [["x", "y"]]})[0] == [ContrastPair("x", "y")]
    assert concepts.append_pairs([["a", "b"], ["", ""]], [ContrastPair("c", "d")]) == [["a", "b"], ["c", "d"]]


def test_check_pairs_messages():
    with pytest.raises(ValueError, match="no contrast pairs"):
        concepts.check_pairs([])
    with pytest.raises(ValueError, match="at least 2"):
        concepts.check_pairs([ContrastPair("a", "b")])
    with pytest.raises(ValueError, match="identical"):
        concepts.check_pairs([ContrastPair("a", "b"), ContrastPair("c", "c")])
    with pytest.raises(ValueError, match="row 2"):
        concepts.check_pairs([ContrastPair("a", "b")] * 2, ["row 2: the negative text is empty"])
    concepts.check_pairs([ContrastPair("a", "b"), ContrastPair("c", "d")])


def test_concept_from_form_validates():
    pairs = [ContrastPair("a", "b"), ContrastPair("c", "d")]
    c = concepts.concept_from_form("Très Sleepy!", "", "desc", "custom", pairs)
    assert c.slug == "tres-sleepy" and c.name == "Très Sleepy!" and c.system_prompts is None
    with pytest.raises(ValueError, match="path separator"):
        concepts.concept_from_form("x", "../x", "", "custom", pairs)
    with pytest.raises(ValueError, match="category"):
        concepts.concept_from_form("x", "x", "", "nonsense", pairs)
    with pytest.raises(ValueError, match="both"):
        concepts.concept_from_form("x", "x", "", "custom", pairs, "only positive", "")
    with pytest.raises(ValueError, match="name"):
        concepts.concept_from_form("", "", "", "custom", pairs)
    c = concepts.concept_from_form("X", "x", "", "emotion", pairs, "be sleepy", "be awake")
    assert c.system_prompts.positive == "be sleepy"


# ---- creator: quality card ---------------------------------------------------------------------

def test_quality_figure_traces_and_recommended_band():
    cv = make_cv()
    fig = concepts.quality_figure(cv, "Quality of Sleepy")
    names = [t.name for t in fig.data]
    assert names == ["vector norm", "typical token norm", "relative norm (vector / typical)", "d′ (separation)",
                     "leave-one-out accuracy"]
    assert list(fig.data[3].y) == [0.5 + l for l in range(6)]
    assert fig.layout.title.text == "Quality of Sleepy"
    rects = [s for s in fig.layout.shapes if s.type == "rect"]
    assert len(rects) == 2 and rects[0].x0 == 1.5 and rects[0].x1 == 3.5
    assert any("recommended<br>2–3" in (a.text or "") for a in fig.layout.annotations)
    assert fig.layout.xaxis2.title.text  # bottom panel x axis labelled
    np.testing.assert_allclose(fig.data[2].y, cv.norms / cv.typical_norms, rtol=1e-5)
    _json_ok(fig)


def test_quality_summary_contains_the_numbers():
    cv = make_cv()
    md = concepts.quality_summary_md(cv, "Sleepy")
    assert "Recommended layers: 2–3" in md
    assert "d′ = 3.50** at layer 3" in md and "**80%**" in md  # best inside the recommended range
    assert "highest d′ overall (5.50) is at layer 5" in md  # and the overall best is called out
    assert "4 pairs" in md and "mean_diff" in md and "1.2 s" in md
    assert "badge" in md


def test_quality_edge_cases_one_layer_nan_and_no_quality():
    one = make_cv(L=1, rec=(0, 0))
    _json_ok(concepts.quality_figure(one))
    assert "Recommended layer: 0" in concepts.quality_summary_md(one)
    nan = make_cv(nan_layer=5)
    fig = concepts.quality_figure(nan)
    assert fig.data[3].y[5] is None
    _json_ok(fig)
    assert "highest d′ overall (4.50) is at layer 4" in concepts.quality_summary_md(nan)  # NaN layer ignored
    bare = make_cv(with_quality=False)
    _json_ok(concepts.quality_figure(bare))
    kind, sentence = concepts.verdict(bare)
    assert kind == "warn" and "No quality numbers" in sentence
    concepts.quality_summary_md(bare)


def test_quality_summary_warns_about_early_layers():
    cv = make_cv(L=10, rec=(5, 6))
    for q in cv.quality:
        q.d_prime = 9.0 if q.layer == 0 else 2.0
    md = concepts.quality_summary_md(cv)
    assert "highest d′ overall (9.00) is at layer 0" in md and "Early layers" in md


def test_verdicts():
    assert concepts.verdict(make_cv(rec=(4, 5)))[0] == "ok"
    weak = make_cv(rec=(0, 1))
    assert concepts.verdict(weak)[0] == "bad"


# ---- library -----------------------------------------------------------------------------------

def test_library_rows_and_card(tmp_path):
    lib = ConceptLibrary(tmp_path)
    c = Concept(slug="sleepy", name="Sleepy", description="Tired | yawning", category="custom",
                pairs=[ContrastPair("zzz", "hello"), ContrastPair("yawn", "hi")], tags=["state"],
                recommended={"test--model": Recommendation(layer=12, strength=0.3)})
    lib.save(c)
    summaries = lib.list()
    rows = concepts.library_rows(summaries, {"sleepy": "missing"})
    assert rows == [["Sleepy", "sleepy", "custom", 2, "user", "not extracted", ""]]
    assert len(rows[0]) == len(concepts.LIBRARY_HEADERS)
    md = concepts.concept_card_md(lib.get("sleepy"), shipped=False, user_copy=True, status="missing", model_id="m")
    assert "Sleepy" in md and "Tired \\| yawning" in md and "| zzz | hello |" in md
    assert "layer **12**" in md and "0.30" in md
    assert "not extracted" in md
    mix = Concept(slug="mix1", name="Mix", category="mix", recipe=[("sleepy", 0.5)])
    md = concepts.concept_card_md(mix, shipped=False, user_copy=True, status="missing", model_id="m")
    assert "Mix of: sleepy × 0.50" in md and "blended" in md
    choices = concepts.concept_choices(summaries, none_label="(none)")
    assert choices[0] == ("(none)", "") and choices[1][1] == "sleepy"


def test_card_names_the_other_models_with_stored_vectors(tmp_path):
    lib = ConceptLibrary(tmp_path)
    lib.save(Concept(slug="sleepy", name="Sleepy", category="custom", pairs=[ContrastPair("zzz", "hello")]))
    assert lib.vector_models("sleepy") == []
    md = concepts.concept_card_md(lib.get("sleepy"), False, True, "ready", "m", other_models=["gemma-3-270m"])
    assert "Also stored for: `gemma-3-270m`" in md
    assert "Also stored for" not in concepts.concept_card_md(lib.get("sleepy"), False, True, "ready", "m")


def test_quality_brief():
    cv = make_cv()
    line = concepts.quality_brief_md(cv.quality, (2, 3))
    assert "layer 3" in line and "d′ 3.50" in line
    assert concepts.quality_brief_md([], (2, 3)) == ""


def _report():
    val = {"method": "bipolar", "layer": 12, "strength": 0.2, "n_prompts": 10, "right_way": 0.9, "wrong_way": 0.1,
           "mean_change": -0.41, "spread": 0.3, "coherent_share": 1.0, "clean_share": 1.0}
    old = {**val, "method": "mean_diff", "layer": 20, "right_way": 0.5, "wrong_way": 0.4, "clean_share": 0.7}
    return {"method": "bipolar", "layer": 12, "strength": 0.2, "eligible": True, "judge": "VADER <b>sentiment</b>",
            "validation": val, "pair_consistency": 0.31,
            "variants": {"mean_diff": {"calibration": {}, "validation": old}, "unit_mean": {"calibration": {}}}}


def test_reliability_readouts_on_card_and_in_table(tmp_path):
    md = concepts.reliability_md(_report())
    assert "10 validation prompts" in md and "<b>" not in md  # the judge label is escaped
    assert "| `bipolar` ✓ | 12 | 0.20 | 90% | 10% | -0.410 | 0.300 | 100% |" in md
    assert "| `mean\\_diff` | 20 | 0.20 | 50% | 40% |" in md
    assert "unit_mean" not in md  # not validated: not shown as if it were
    assert "0.31" in md
    assert "Not calibrated" in concepts.reliability_md(None)
    banded = _report()
    banded["validation"] = {**banded["validation"], "band": [8, 10, 14, 16]}
    assert "| `bipolar` ✓ | 8,10,12,14,16 | 0.20 |" in concepts.reliability_md(banded)  # every layer of a band
    lib = ConceptLibrary(tmp_path)
    lib.save(Concept(slug="sad", name="Sad", pairs=[ContrastPair("a", "b"), ContrastPair("c", "d")]))
    rows = concepts.library_rows(lib.list(), {"sad": "ready"}, calibration={"sad": _report()})
    assert rows[0][-1] == "9/10 right way, 100% clean"


def test_token_window_caps_dense_heatmaps():
    from types import SimpleNamespace

    import numpy as np

    from app.domain import limits
    from app.ui.present import explorer as pe

    T, L = 100, 4
    ex = SimpleNamespace(tokens=[f"t{i}" for i in range(T)], norms=np.ones((L, T)),
                         lens_top=[[[("x", 0.5)] for _ in range(T)] for _ in range(L)], projections=None)
    assert pe.parse_token_range("", T) == (0, limits.HEATMAP_TOKENS)
    assert pe.parse_token_range("60-79", T) == (60, 80)
    assert pe.parse_token_range("90-200", T) == (90, 100)
    assert pe.parse_token_range("0-99", T) == (0, limits.HEATMAP_TOKENS)  # never more than the cap
    win = pe.token_window(ex, 60, 80)
    fig = pe.norm_heatmap_figure(win)
    assert len(fig.data[0].x) == 20 and fig.data[0].x[0].startswith("60 ")  # real positions on the axis
    assert "60–79 of 100" in pe.window_note(60, 80, T) and pe.window_note(0, T, T) == ""
