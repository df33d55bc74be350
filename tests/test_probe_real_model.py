"""The one-vs-rest probe judge on the bundled model: it separates pairs it never saw and tells
sad from happy (which the concept's own projection cannot)."""

from __future__ import annotations

import app.core  # noqa: F401  (fast BLAS before mlx)

import dataclasses

import numpy as np
import pytest

from app import paths
from app.core.judges import build_judge, judge_scores
from app.library import parse_concept
from app.types import JudgeSpec

pytestmark = pytest.mark.real_model
HELD_OUT = 6
HAPPY = "What a wonderful day! I am so happy and grateful, everything feels bright and joyful."
SAD = "I feel so alone and heartbroken. Everything is grey, and I cannot stop crying."


@pytest.fixture(scope="module")
def library():
    return [parse_concept(p.read_text(encoding="utf-8"), p.stem) for p in sorted(paths.SHIPPED_CONCEPTS.glob("*.yaml"))]


@pytest.fixture(scope="module")
def sad_probe(default_service, library):
    sad = next(c for c in library if c.slug == "sad")
    train = dataclasses.replace(sad, pairs=sad.pairs[:-HELD_OUT])
    judge = build_judge(JudgeSpec("probe"), lm=default_service.loaded, concept=train, library_concepts=library)
    return judge, sad.pairs[-HELD_OUT:]


def test_probe_reports_held_out_accuracy(sad_probe):
    judge, _ = sad_probe
    assert judge.kind == "probe" and judge.layer == 30 // 2  # SmolLM2-135M has 30 layers
    assert 0.8 <= judge.accuracy <= 1.0 and judge.pair_accuracy >= 0.8
    assert f"{judge.accuracy:.2f}" in judge.label


def test_probe_separates_held_out_pairs(sad_probe):
    judge, held = sad_probe
    pos = judge_scores(judge, [p.positive for p in held])
    neg = judge_scores(judge, [p.negative for p in held])
    assert np.mean(pos > neg) >= 5 / 6, (pos, neg)
    assert pos.mean() > neg.mean() and np.mean(neg < 0) >= 5 / 6


def test_probe_ranks_a_happy_text_below_a_sad_text_for_sad(sad_probe, library):
    judge, _ = sad_probe
    # Happy positives the probe never saw (training takes the first MAX_OTHER_PER_CONCEPT of each concept).
    happy_pos = [p.positive for p in next(c for c in library if c.slug == "happy").pairs[-6:]]
    s = judge_scores(judge, [HAPPY, SAD] + happy_pos)
    assert s[0] < 0 < s[1]
    assert np.all(s[2:] < s[1]), "happy examples must not look sad to the sad probe"
