"""The effect map, the "where it applies" table and gate colouring as HTML (no server, no model)."""

from __future__ import annotations

from app.ui.present.generation import settings_text, tokens_html
from app.ui.present.insight import applied_html, applied_rows, effect_map_html


def test_effect_map_shades_by_kl_and_escapes_text():
    fx = [{"index": 0, "token": "<b>Hi", "kl": 0.0, "promoted": []},
          {"index": 1, "token": " there", "kl": 2.0, "promoted": [[" joy", 1.5]]}]
    out = effect_map_html(fx)
    assert "&lt;b&gt;Hi" in out and "<b>Hi" not in out
    assert "rgba(220,38,38,0.0)" in out and "rgba(220,38,38,0.75)" in out
    assert "joy" in out and "token 1" in out
    assert "after a run" in effect_map_html([])


def test_applied_rows_compress_decode_steps_with_the_same_coefficient():
    applied = [{"layer": 12, "op": "rotate", "phase": "prefill", "step": None, "positions": [1, 9], "coefficient": 20.0}]
    applied += [{"layer": 12, "op": "rotate", "phase": "decode", "step": s, "positions": [10 + s, 10 + s],
                 "coefficient": 20.0} for s in range(5)]
    applied += [{"layer": 12, "op": "rotate", "phase": "decode", "step": 5, "positions": [15, 15], "coefficient": 10.0}]
    rows = applied_rows(applied)
    assert len(rows) == 3 and rows[1]["steps"] == [0, 1, 2, 3, 4] and rows[1]["last"] == 14
    html = applied_html(applied, {"positions": "all"})
    assert "prompt (prefill)" in html and "generated token(s) 0-4" in html and "1–9" in html


def test_gates_mark_tokens_and_settings_name_the_operation():
    out = tokens_html(["a", "b"], gates=[1.0, 0.0])
    assert "tok-gate-open" in out and "tok-gate-shut" in out and "condition shut" in out
    line = settings_text({"label": "happy", "layers": [{"layer": 12, "strength": 20.0}], "op": "rotate",
                          "op_param_name": "theta", "op_param": 20.0, "condition": "angry", "threshold": 1.0})
    assert "rotate theta=20" in line and "only where angry > 1" in line
    assert "relative" not in line and "add" not in line  # an operation's line does not name addition's units
    plain = settings_text({"label": "happy", "layers": [{"layer": 12, "strength": 0.3}], "strength_mode": "relative"})
    assert "L12 @ 0.3 (relative, added to the residual)" in plain
    many = settings_text({"label": "formal", "layers": [{"layer": i} for i in range(30)], "op": "ablate",
                          "op_param_name": "a", "op_param": 1.0})
    assert "L0–L29 (30 layers) ablate a=1" in many


def test_effect_map_keeps_tiny_effects_pale_and_names_special_tokens():
    tiny = [{"index": 0, "token": " a", "kl": 0.001, "promoted": []},
            {"index": 1, "token": "<|im_end|>", "kl": 0.004, "promoted": []}]
    out = effect_map_html(tiny)
    alphas = [float(a) for a in __import__("re").findall(r"rgba\(220,38,38,([0-9.]+)\)", out)]
    assert max(alphas) < 0.1  # not full red just because it is this run's largest
    assert "barely changed" in out
    assert "[end: im_end]" in out and "&lt;|im_end|&gt;" not in out
