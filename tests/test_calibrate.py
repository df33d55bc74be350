"""Calibration: prompt sets, the selection rule, batched cells and the search on a tiny model."""

from __future__ import annotations

import re

import numpy as np
import pytest

from app.core.calibrate import CellStats, PROMPTS_DIR, load_prompts, pair_consistency, rank_layers, select
from app.types import Concept, ContrastPair, SystemPromptPair

OLD_CALIBRATION_PROMPTS = (  # the lab's first calibration list: never allowed in validation
    "Tell me about your weekend.",
    "Describe the town where you live.",
    "What do you think about Mondays?",
)


def _norm(text: str) -> str:
    return re.sub(r"[^a-z0-9 ]+", "", re.sub(r"\s+", " ", text.casefold())).strip()


# ---- prompt sets ---------------------------------------------------------------------------
def test_prompt_sets_are_big_enough_and_disjoint():
    cal, val = load_prompts("calibration"), load_prompts("validation")
    assert len(cal) >= 8 and len(val) >= 8
    assert len({_norm(p) for p in cal}) == len(cal) and len({_norm(p) for p in val}) == len(val)
    assert not {_norm(p) for p in cal} & {_norm(p) for p in val}, "a prompt is in both sets"
    assert not {_norm(p) for p in OLD_CALIBRATION_PROMPTS} & {_norm(p) for p in val}


def test_prompts_are_not_concept_pair_texts():
    from app import paths
    from app.library.schema import parse_concept

    texts = set()
    for path in paths.SHIPPED_CONCEPTS.glob("*.yaml"):
        c = parse_concept(path.read_text(encoding="utf-8"), path.stem)
        texts |= {_norm(t) for p in c.pairs for t in (p.positive, p.negative)}
    prompts = {_norm(p) for p in load_prompts("calibration") + load_prompts("validation")}
    assert not prompts & texts


def test_near_duplicates_are_caught(tmp_path):
    """The normaliser the disjointness test relies on must see through case and punctuation."""
    (tmp_path / "a.txt").write_text("# comment\nTell me about your WEEKEND!\n\n", encoding="utf-8")
    assert load_prompts("a", tmp_path) == ["Tell me about your WEEKEND!"]
    assert _norm("Tell me about your WEEKEND!") == _norm("tell me about your weekend.")


# ---- selection rule ------------------------------------------------------------------------
def _stats(layer, strength, changes, coherent=None):
    n = len(changes)
    coherent = [True] * n if coherent is None else coherent
    return CellStats("c:mean_diff", layer, strength, list(changes), list(coherent), list(coherent))


def test_select_prefers_reliable_coherent_cells_and_smaller_strength_on_ties():
    loud_but_broken = _stats(10, 0.45, [2, 2, 2, 2, 2], [True, False, False, True, True])
    reliable = _stats(12, 0.2, [0.5, 0.4, 0.6, 0.5, 0.5])
    erratic = _stats(14, 0.2, [3, -1, -1, 2, -1])  # right way 2/5: objective 0.4 * 0.4
    same_but_stronger = _stats(12, 0.3, [0.5, 0.4, 0.6, 0.5, 0.5])
    assert select([loud_but_broken, erratic, same_but_stronger, reliable]) is reliable
    assert select([loud_but_broken]) is None
    assert rank_layers([erratic, reliable, loud_but_broken], 2) == [12, 14]


def test_cell_readouts():
    s = _stats(3, 0.1, [1.0, -1.0, 0.5, 0.0])
    assert (s.right_way, s.wrong_way) == (0.5, 0.25)
    assert s.mean_change == pytest.approx(0.125) and s.spread == pytest.approx(np.std([1, -1, 0.5, 0]))


def test_pair_consistency_is_one_for_parallel_and_low_for_random_differences():
    rng = np.random.default_rng(0)
    d = rng.standard_normal(32)
    pos = np.stack([np.stack([d * k for k in (1.0, 2.0, 3.0)])])  # [L=1, N=3, H]
    assert pair_consistency(pos, np.zeros_like(pos), 0) == pytest.approx(1.0)
    noisy = rng.standard_normal((1, 12, 32))
    assert abs(pair_consistency(noisy, np.zeros_like(noisy), 0)) < 0.2


# ---- batched cells and the search on a tiny model -------------------------------------------
@pytest.fixture(scope="module")
def lm():
    from test_extraction import tiny_lm

    return tiny_lm()


def _concepts():
    words = "alpha beta gamma delta eps zeta eta theta".split()
    a = Concept(slug="up", name="Up", category="emotion", opposite="down",
                system_prompts=SystemPromptPair("be up", "be plain"),
                pairs=[ContrastPair(f"{w} up up {i}", f"{w} plain {i}") for i, w in enumerate(words)])
    b = Concept(slug="down", name="Down", category="emotion", opposite="up",
                pairs=[ContrastPair(f"{w} down {i} down", f"{w} plain {i}") for i, w in enumerate(words)])
    return [a, b]


def _letter_judge(texts):
    return np.array([t.count("a") - t.count("e") for t in texts], dtype=np.float64)


def test_cells_in_a_mixed_batch_match_cells_run_alone(lm):
    from app.core.calib_search import build_variants
    from app.core.cellbatch import Cell, generate_cells

    variants, _ = build_variants(lm, _concepts(), ("mean_diff", "bipolar"))
    vec = {f"{s}:{m}": cv for s, ms in variants.items() for m, cv in ms.items()}
    cells = [Cell("up:mean_diff", 1, 0.4), Cell("down:bipolar", 2, 6.0), Cell("up:bipolar", 1, 0.0)]
    prompt = [5, 9, 23, 40, 7]
    base, mixed = generate_cells(lm, prompt, vec, cells, 12)
    for cell, out in zip(cells, mixed):
        _, alone = generate_cells(lm, prompt, vec, [cell], 12)
        assert alone[0].tokens == out.tokens
    assert mixed[2].tokens == base.tokens  # strength 0 is the baseline exactly
    assert mixed[1].tokens != base.tokens  # a strong push changes the text


def test_search_is_deterministic_on_a_tiny_model(lm):
    from app.core.calib_search import SearchPlan, build_variants, run_search
    from app.domain.methods import COMPARED_METHODS

    plan = SearchPlan(coarse_layers=(1, 2), coarse_prompts=2, coarse_tokens=6, fine_strengths=(0.3, 1.0),
                      cal_tokens=8, val_tokens=8, methods=COMPARED_METHODS)
    cal, val = ["w1 w2", "w3 w4", "w5"], ["w6 w7", "w8"]
    judges = {"up": _letter_judge, "down": lambda t: -_letter_judge(t)}
    runs = []
    for _ in range(2):
        variants, consistency = build_variants(lm, _concepts(), plan.methods)
        runs.append(run_search(lm, variants, judges, cal, val, plan))
    assert runs[0] == runs[1]
    up = runs[0]["up"]
    assert set(up["variants"]) == {"mean_diff", "bipolar", "no_shared", "system_prompt", "unit_mean", "response"}
    assert "system_prompt" not in runs[0]["down"]["variants"]  # down has no system prompts
    assert up["validation"]["n_prompts"] == 2 and len(up["validation"]["texts"]) == 2
    assert up["layer"] in (1, 2)
    if up["band"]:  # a band cell: a band strength over the layers around the chosen one
        assert up["strength"] in plan.band_strengths and up["band"] == list(plan.band_of(up["layer"], lm.num_layers))
    else:
        assert up["strength"] in (0.3, 1.0)
    assert up["validation"].get("band", []) == up["band"]
    assert 0 <= up["validation"]["right_way"] <= 1 and len(consistency["up"]) == lm.num_layers


def test_plain_rows_of_different_prompts_match_single_runs(lm):
    """Left-padded prompts of different lengths in one batch give each prompt's own greedy text."""
    from app.core.cellbatch import generate_cells, generate_plain

    prompts = [[5, 9, 23, 40, 7], [11, 3], [60, 61, 62, 63, 64, 65, 66, 67]]
    batched = generate_plain(lm, prompts, 10)
    for p, (toks, _) in zip(prompts, batched):
        base, _ = generate_cells(lm, p, {}, [], 10)
        assert base.tokens == toks


def test_padded_steered_rows_match_per_prompt_batches(lm):
    """Rows with different prompts AND different steering in one left-padded batch give the same
    greedy tokens as each prompt's own batch (the first real token is never steered)."""
    from app.core.calib_search import build_variants
    from app.core.cellbatch import Cell, generate_cells, generate_padded

    variants, _ = build_variants(lm, _concepts(), ("mean_diff",))
    vec = {f"{s}:{m}": cv for s, ms in variants.items() for m, cv in ms.items()}
    prompts = [[5, 9, 23, 40, 7], [11, 3], [60, 61, 62, 63, 64, 65, 66, 67]]
    cells = [Cell("up:mean_diff", 1, 3.0), None, Cell("down:mean_diff", 2, 6.0)]
    padded = generate_padded(lm, prompts, vec, cells, 10)
    for p, c, (toks, _) in zip(prompts, cells, padded):
        base, out = generate_cells(lm, p, vec, [c] if c else [], 10)
        assert (out[0].tokens if c else base.tokens) == toks
    assert padded[2][0] != generate_cells(lm, prompts[2], vec, [], 10)[0].tokens


def test_a_band_cell_steers_every_layer_of_its_band(lm):
    """A band cell (one relative strength at several layers) gives the same greedy tokens in a
    left-padded batch as through run_batch, and differs from its main layer alone."""
    from app.core.calib_search import build_variants
    from app.core.cellbatch import Cell, generate_cells, generate_padded
    from app.core.generation import run_batch
    from app.core.interventions import Add
    from app.types import GenerationParams

    variants, _ = build_variants(lm, _concepts(), ("mean_diff",))
    vec = {f"{s}:{m}": cv for s, ms in variants.items() for m, cv in ms.items()}
    prompts = [[5, 9, 23, 40, 7], [11, 3]]
    band = Cell("up:mean_diff", 1, 2.0, band=(0, 2))
    assert band.layers == (0, 1, 2)
    padded = generate_padded(lm, prompts, vec, [band, band], 10)
    cv = vec["up:mean_diff"]
    adds = [Add(l, cv.unit(l).astype(np.float32), 2.0 * float(cv.typical_norms[l])) for l in (0, 1, 2)]
    for p, (toks, _) in zip(prompts, padded):
        _, out = generate_cells(lm, p, vec, [band], 10)
        assert out[0].tokens == toks
        last = None
        for last in run_batch(lm, p, [adds], GenerationParams(max_tokens=10)):
            pass
        assert list(last.rows[0].tokens) == toks
    _, alone = generate_cells(lm, prompts[0], vec, [Cell("up:mean_diff", 1, 2.0)], 10)
    assert alone[0].tokens != padded[0][0]


def test_padded_and_per_prompt_rows_share_the_repetition_penalty(lm):
    """With a repetition penalty, the calibration's left-padded batch still equals each prompt's own
    batch (the path of a distributed rank), and the penalty reaches both (else the texts stay the same)."""
    from app.core.calib_search import build_variants
    from app.core.cellbatch import Cell, generate_cells, generate_padded

    variants, _ = build_variants(lm, _concepts(), ("mean_diff",))
    vec = {f"{s}:{m}": cv for s, ms in variants.items() for m, cv in ms.items()}
    prompts = [[5, 9, 23, 40, 7], [11, 3]]
    cells = [Cell("up:mean_diff", 1, 3.0), None]
    padded = generate_padded(lm, prompts, vec, cells, 16, repetition_penalty=1.8)
    plain = generate_padded(lm, prompts, vec, cells, 16)
    for p, c, (toks, _) in zip(prompts, cells, padded):
        base, out = generate_cells(lm, p, vec, [c] if c else [], 16, repetition_penalty=1.8)
        assert (out[0].tokens if c else base.tokens) == toks
    assert [t for t, _ in padded] != [t for t, _ in plain]


def test_calibrate_request_checks_the_repetition_penalty():
    from app.domain.requests import CalibrateRequest
    from app.errors import InputError

    assert CalibrateRequest(concepts=("up",), repetition_penalty=1.15).repetition_penalty == 1.15
    with pytest.raises(InputError, match="repetition penalty"):
        CalibrateRequest(concepts=("up",), repetition_penalty=0.5)
