"""The quality card warns when separation may come from surface words, and then never says "good"."""

from __future__ import annotations

import numpy as np

from app.types import ConceptVectors, ContrastPair, LayerQuality
from app.ui.present import concepts as pc


def make_cv(d_primes) -> ConceptVectors:
    L = len(d_primes)
    rng = np.random.default_rng(0)
    return ConceptVectors(model_id="m", model_fingerprint="f", method="mean_diff",
                          vectors=rng.normal(size=(L, 8)).astype(np.float32), typical_norms=np.ones(L, np.float32),
                          concept_fingerprint="c", quality=[LayerQuality(i, 1.0, 1.0, d, 1.0, 0.5) for i, d in enumerate(d_primes)],
                          recommended_layers=(4, 6), created_at="", lab_version="")


def test_early_separation_warns_and_downgrades_good():
    surface = make_cv([5.4, 5.0, 2.0, 3.0, 7.7, 7.5, 7.0, 4.0])  # the newcomer's "sarcastic" card
    meaning = make_cv([0.5, 0.8, 1.0, 2.0, 7.7, 7.5, 7.0, 4.0])
    assert pc.early_separation(surface)[0] == 0 and pc.early_separation(meaning) is None
    card = pc.quality_summary_md(surface, "Sarcastic")
    assert "Layer 0 already separates" in card and "system-prompt" in card and ">good<" not in card
    assert ">good<" in pc.quality_summary_md(meaning, "Meaning") and "⚠" not in pc.quality_summary_md(meaning)


def test_pairs_that_share_a_cue_phrase_are_flagged():
    cue = [ContrastPair(f"Oh great, the {w} broke again.", f"The {w} broke again.") for w in
           ("bus", "printer", "car", "phone", "oven")]
    varied = [ContrastPair("What a wonderful mess you made.", "You made a mess."),
              ContrastPair("Oh sure, because that always works.", "That does not always work."),
              ContrastPair("Fantastic, another Monday.", "It is Monday again."),
              ContrastPair("Wow, you are so early, only two hours late.", "You are two hours late.")]
    assert [w for w, _ in pc.shared_cue_words(cue)] == ["great", "oh"]
    assert pc.shared_cue_words(varied) == []
    card = pc.quality_summary_md(make_cv([0.5, 0.8, 1.0, 2.0, 7.7, 7.5, 7.0, 4.0]), "Sarcastic", pairs=cue)
    assert "differ mostly in a few shared words" in card and "“great” (5 of 5 pairs)" in card
