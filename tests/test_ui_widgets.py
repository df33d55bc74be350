"""Shared widgets' handlers, called as plain functions (no server, no model)."""

from __future__ import annotations

from types import SimpleNamespace

from app.domain import limits
from app.ui import widgets


class FakeLibrary:
    def __init__(self, slugs):
        self.slugs = list(slugs)

    def list(self):
        return [SimpleNamespace(slug=s, name=s.title()) for s in self.slugs]


class FakeService:
    is_loaded = True

    def __init__(self, slugs=("happy", "sad"), rec=(14, 0.25, True, "sweep"), band=()):
        self.concepts = FakeLibrary(slugs)
        self.rec = rec
        self.band = band

    def info(self):
        return SimpleNamespace(num_layers=30)

    def resolve_vectors(self, concept):
        if concept not in self.concepts.slugs:
            raise ValueError(f"unknown concept {concept!r}")
        return object(), concept

    def recommended_setting(self, concept, cv):
        return self.rec

    def recommended_band(self, concept):
        return self.band


def test_strength_slider_uses_one_limit_per_mode_and_announces_clamping():
    rel = widgets.strength_slider(False, 0.3)
    assert (rel.minimum, rel.maximum, rel.value) == (-limits.STRENGTH_LIMITS["relative"], 1.0, 0.3)
    clamped = widgets.strength_slider(False, 1e9)
    assert clamped.value == 1.0 and "set to 1" in clamped.info
    ab = widgets.strength_slider(True)
    assert ab.maximum == limits.STRENGTH_LIMITS["absolute"] and ab.value == limits.DEFAULT_STRENGTH["absolute"]


def test_recommended_updates_move_the_sliders():
    layer, strength, absolute = widgets.recommended_updates(FakeService(), "happy")
    assert layer.value == 14 and "recommended" in layer.info
    assert strength.value == 0.25 and absolute.value is False
    layer, strength, absolute = widgets.recommended_updates(FakeService(rec=(99, 3.0, False, "x")), "happy")
    assert layer.value == 29 and strength.value == 3.0 and absolute.value is True
    layer, _, _ = widgets.recommended_updates(FakeService(band=(10, 18)), "happy")
    assert layer.value == 14 and "plus layers 10, 18 at the same strength" in layer.info


def test_concept_lists_offer_every_concept_and_none_where_optional():
    svc = FakeService(slugs=("happy", "sleepy"))
    pg, mixer = widgets.concept_list_updates(svc, ["playground.concept", "mixer.concept_1"])
    assert [v for _, v in pg.choices] == ["happy", "sleepy"]
    assert [v for _, v in mixer.choices] == ["", "happy", "sleepy"]
    svc.concepts.slugs.append("new-one")  # a save elsewhere: the next refresh shows it
    (pg,) = widgets.concept_list_updates(svc, ["playground.concept"])
    assert "new-one" in [v for _, v in pg.choices]
