"""Service methods for judges: which judge a concept has, built once per model, and its scores.

Text judges cost milliseconds; a probe judge is trained on the loaded model (tens of seconds on
the default model on a 2-core CPU), so every built judge is kept per (model, concept, spec) and
reused until the concept's pairs or judge change. Callers run these inside a job (model lock).
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

from app.core.judges import Judge, build_judge, default_spec, judge_scores
from app.service.session import ModelSession
from app.types import Concept, JudgeSpec

MAX_CACHED_JUDGES = 32


def concept_slug(text: str) -> Optional[str]:
    """The named concept behind a steering choice: a slug or random:<slug>; None for a mix."""
    text = (text or "").strip()
    if text.startswith("random:"):
        text = text.split(":", 1)[1].strip()
    if not text or ":" in text or "," in text:
        return None
    return text


def prompted_system(concept: Concept, user_system: Optional[str] = None) -> str:
    """The system prompt of the "prompted" row: the concept's own positive one (or one made
    from its name), followed by the user's system prompt if there is one."""
    sp = concept.system_prompts.positive if concept.system_prompts else f"Respond in a {concept.name.lower()} way."
    return f"{sp}\n\n{user_system}" if user_system else sp


class JudgeOps:
    """Each concept's judge on the session's model, built once and kept (at most ``MAX_CACHED_JUDGES``)."""

    def __init__(self, session: ModelSession) -> None:
        self.session = session
        self._judges: dict[tuple, Judge] = {}

    def judge_spec(self, concept: str) -> Optional[JudgeSpec]:
        slug = concept_slug(concept)
        if slug is None:
            return None
        return default_spec(self.session.library.get(slug))

    def judge_for(self, concept: str, train: Optional[bool] = None) -> Optional[Judge]:
        """The concept's judge on the loaded model (None for mixes and judge-less concepts).

        A probe is trained when the concept declares one (or ``train=True``); the default probe
        of a concept that declares no judge is only used once trained, so an ordinary run never
        waits for it. ``train=False`` never trains."""
        slug = concept_slug(concept)
        if slug is None:
            return None
        c = self.session.library.get(slug)
        spec = default_spec(c)
        if spec is None:
            return None
        key = (self.session.loaded.info().fingerprint if spec.kind == "probe" else "", slug, c.pairs_fingerprint(), spec)
        cache = self._judges
        if train is None:
            train = c.judge is not None
        if key not in cache:
            if spec.kind == "probe" and not train:
                return None
            others = self._probe_others(slug) if spec.kind == "probe" else None
            if len(cache) >= MAX_CACHED_JUDGES:
                cache.pop(next(iter(cache)))
            cache[key] = build_judge(spec, lm=self.session.loaded, concept=c, library_concepts=others)
        return cache[key]

    def _probe_others(self, slug: str) -> list[Concept]:
        out = []
        for s in self.session.library.list():
            if s.slug != slug and s.n_pairs > 0:
                try:
                    out.append(self.session.library.get(s.slug))
                except Exception:  # noqa: BLE001 - a broken file is listed in library.problems
                    continue
        return out

    def judge_texts(self, judge: Judge, named: dict[str, Optional[str]]) -> dict[str, Any]:
        """Signed judge scores (higher = more of the concept) of named texts, and changes vs baseline."""
        names = [k for k, v in named.items() if v is not None]
        scores = judge_scores(judge, [named[k] for k in names]) if names else []
        out: dict[str, Any] = {"kind": judge.kind, "label": judge.label, "sign": judge.sign,
                               "accuracy": getattr(judge, "accuracy", None)}
        out.update({k: round(float(v), 4) for k, v in zip(names, scores)})
        if "baseline" in out:
            for k in names:
                if k != "baseline":
                    out[f"{k}_change"] = round(out[k] - out["baseline"], 4)
        return out

    def judge_summary(self, concept: str) -> Optional[dict[str, Any]]:
        """What the quality card shows: the declared judge, and a trained probe's accuracy if known."""
        spec = self.judge_spec(concept)
        if spec is None:
            return None
        judge = self.judge_for(concept, train=False) if self.session.is_loaded else None
        if judge is None and spec.kind != "probe":
            judge = build_judge(spec)
        return {"kind": spec.kind, "sign": spec.sign, "label": judge.label if judge else "probe (not trained yet)",
                "accuracy": getattr(judge, "accuracy", None) if judge else None,
                "pair_accuracy": getattr(judge, "pair_accuracy", None) if judge else None}


def score_rows(judge: Judge, texts: Sequence[str]) -> list[float]:
    return [float(v) for v in judge_scores(judge, texts)]
