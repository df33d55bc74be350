"""Concept work on the loaded model: extract, load-or-extract, resolve a steering choice, mix, compare.

``ConceptOps`` is handed the ``ModelSession`` (model, lock, library) and keeps no state of its own.
Imported control vectors (see ``transfer_ops``) are concepts with category ``imported`` and the
self-recipe ``[(slug, 1.0)]``; ``concept_vectors`` only ever loads their stored vectors (never
re-extracts or blends an imported concept).
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Optional, Sequence

import numpy as np

from app.core.extraction import METHODS, extract, random_control, unit_rows
from app.domain.methods import method_choices
from app.core.mixing import blend, cosine_matrix, mix_concept, parse_mix
from app.domain import limits
from app.domain.parse import RANDOM_PREFIX, looks_like_mix as is_mix
from app.errors import InputError
from app.service.jobs import CancelToken
from app.service.session import ModelSession
from app.types import Concept, ConceptVectors, Recommendation

log = logging.getLogger("steering_lab.concepts")

MAX_PAIR_TEXT = limits.PAIR_TEXT_CHARS
MAX_PAIRS = limits.PAIRS_PER_CONCEPT
MAX_RECIPE_DEPTH = limits.MIX_DEPTH
MAX_EXTRACT_TOKENS = limits.EXTRACT_TOKENS
DEFAULT_RELATIVE_STRENGTH = limits.DEFAULT_STRENGTH["relative"]

Progress = Optional[Callable[[int, int], None]]


def validate_for_extraction(concept: Concept, method: str) -> None:
    """Everything extraction needs, checked before the model is touched."""
    if method not in METHODS:
        raise InputError(f"unknown extraction method {method!r}; choose one of {', '.join(METHODS)}")
    if concept.recipe is not None:
        kind = "imported" if is_stored_only(concept) else "a mix"
        raise InputError(f"{concept.slug!r} is {kind} and has no contrast pairs to extract from")
    n = len(concept.pairs)
    if n < 2:
        raise InputError(f"{concept.slug!r} has {n} contrast pair(s); extraction needs at least 2")
    if n > MAX_PAIRS:
        raise InputError(f"{concept.slug!r} has {n} contrast pairs; at most {MAX_PAIRS} are allowed")
    for i, p in enumerate(concept.pairs, 1):
        for side, text in (("positive", p.positive), ("negative", p.negative)):
            if not isinstance(text, str) or not text.strip():
                raise InputError(f"pair {i}: the {side} text is empty")
            if len(text) > MAX_PAIR_TEXT:
                raise InputError(f"pair {i}: the {side} text has {len(text)} characters (at most {MAX_PAIR_TEXT})")
    sp = concept.system_prompts
    if sp is not None:
        for side, text in (("positive", sp.positive), ("negative", sp.negative)):
            if len(text) > MAX_PAIR_TEXT:
                raise InputError(f"the {side} system prompt has {len(text)} characters (at most {MAX_PAIR_TEXT})")


def slug_list(value: Any) -> list[str]:
    """``None`` / ``"a"`` / ``"a, b"`` / ``["a", "b"]`` -> ``["a", "b"]`` (lower-cased, no blanks)."""
    if value is None:
        return []
    items = value.split(",") if isinstance(value, str) else list(value)
    return list(dict.fromkeys(str(s).strip().lower() for s in items if str(s).strip()))


def is_stored_only(concept: Concept) -> bool:
    """Imported concepts: vectors come only from the library (see the module docstring)."""
    return concept.category == "imported" or (
        concept.recipe is not None and [s for s, _ in concept.recipe] == [concept.slug])


class ConceptOps:
    """The library's concepts as vectors of the session's model: stored, extracted, blended or resolved."""

    def __init__(self, session: ModelSession) -> None:
        self.session = session

    # ---- helpers ---------------------------------------------------------------------------
    def _stored_vectors(self, slug: str) -> Optional[ConceptVectors]:
        """This model's stored vectors for ``slug``; raises StaleVectors / VectorMismatch."""
        return self.session.library.load_vectors(slug, *self.session.model_key_args())

    def _other_vectors(self, exclude: str) -> dict[str, ConceptVectors]:
        """Current vectors of every other concept for this model (skips missing / stale ones)."""
        from app.library import LibraryError

        out = {}
        for summary in self.session.library.list():
            if summary.slug == exclude:
                continue
            try:
                cv = self._stored_vectors(summary.slug)
            except LibraryError:
                continue
            if cv is not None:
                out[summary.slug] = cv
        return out

    def _known_slugs(self) -> list[str]:
        return [s.slug for s in self.session.library.list()]

    def _check_extraction_size(self, concept: Concept) -> int:
        """Bound the work by tokens, not characters: 64 long pairs once held the model for 15 minutes.

        Counted outside the model lock (the tokenizer is not MLX); stops counting at the limit.
        """
        from app.core.chat import encode

        tok = self.session.loaded.tokenizer
        sp = concept.system_prompts
        extra = {True: 0, False: 0}
        if sp is not None:
            extra = {True: len(encode(tok, sp.positive)), False: len(encode(tok, sp.negative))}
        total = 0
        for p in concept.pairs:
            total += len(encode(tok, p.positive)) + len(encode(tok, p.negative)) + extra[True] + extra[False]
            if total > MAX_EXTRACT_TOKENS:
                raise InputError(
                    f"{concept.slug!r}: its {len(concept.pairs)} pairs are too long to extract at once (more than "
                    f"{MAX_EXTRACT_TOKENS} tokens together); use fewer or shorter pairs (4-20 sentences are enough)")
        return total

    # ---- extraction ------------------------------------------------------------------------
    def extract_concept(
        self,
        slug_or_concept: str | Concept,
        method: Optional[str] = None,
        progress: Progress = None,
        token: Optional[CancelToken] = None,
        save: bool = True,
    ) -> ConceptVectors:
        """Extract vectors for every layer (``method`` None: the concept's own ``method:``, else
        mean_diff); with ``save`` store them when the concept is in the library unchanged (a
        Concept edited but not yet saved is extracted, not stored)."""
        concept = self.session.library.get(slug_or_concept) if isinstance(slug_or_concept, str) else slug_or_concept
        method = method or concept.method or "mean_diff"
        validate_for_extraction(concept, method)
        self._check_extraction_size(concept)
        others = self._other_vectors(concept.slug)
        needs = METHODS[method].needs
        opposite = self._opposite(concept) if "opposite_pos" in needs else None
        category = self._category_units(concept, others) if "category_units" in needs else None

        def job(tok) -> ConceptVectors:
            return extract(self.session.loaded, concept, method, progress=progress, should_stop=tok, others=others,
                           opposite=opposite, category_units=category)

        cv = self.session.jobs.run(job, token)
        if save:
            with self.session.jobs.lock:  # a library write, like every other, under the model lock
                stored = self.session.library.exists(concept.slug) and \
                    self.session.library.get(concept.slug).pairs_fingerprint() == cv.concept_fingerprint
                if stored:
                    self.session.library.save_vectors(concept.slug, self.session.loaded.model_id, cv)
            if not stored:
                log.info("vectors for %r not stored: the concept is not saved in the library as extracted",
                         concept.slug)
        return cv

    def _opposite(self, concept: Concept) -> Concept:
        """The opposite concept; a form copy of a library concept inherits the library's ``opposite:``."""
        if not concept.opposite and self.session.library.exists(concept.slug):
            concept = self.session.library.get(concept.slug)
        if not concept.opposite:
            raise InputError(f"the bipolar method needs an opposite concept: set `opposite:` for {concept.slug!r}")
        return self.session.library.get(concept.opposite)

    def _category_units(self, concept: Concept, others: dict[str, ConceptVectors]) -> np.ndarray:
        """[L, K, H] unit vectors of the other concepts of the same category (for no_shared)."""
        mates = [cv for s, cv in others.items()
                 if self.session.library.get(s).category == concept.category and cv.num_layers == self.session.loaded.num_layers]
        if not mates:
            raise InputError(f"the no_shared method needs vectors of another {concept.category!r} concept "
                             "for this model; extract one first")
        return np.stack([unit_rows(cv.vectors) for cv in mates], axis=1)

    def extraction_methods(self) -> list[tuple[str, str]]:
        """(name, one-line help) of every registered extraction method, for pickers."""
        return method_choices()

    def calibration_report(self, slug: str) -> Optional[dict]:
        """The stored calibration of ``slug`` for the loaded model (assets/calibration), or None."""
        return self.calibration_reports().get(slug)

    def calibration_reports(self) -> dict:
        """slug -> stored calibration report for the loaded model ({} when none)."""
        from app.library.calibration import load_calibration
        from app.library.slugs import model_key

        return load_calibration(model_key(self.session.loaded.model_id))

    def concept_vectors(self, slug: str, progress: Progress = None, token: Optional[CancelToken] = None,
                        _depth: int = 0) -> ConceptVectors:
        """Stored vectors for the loaded model; extracted (and saved) when missing or stale;
        blended from the recipe for mixes."""
        from app.library import LibraryError, StaleVectors, VectorMismatch

        if _depth > MAX_RECIPE_DEPTH:
            raise InputError(f"mix {slug!r} nests more than {MAX_RECIPE_DEPTH} mixes deep (a mix that contains itself?)")
        concept = self.session.library.get(slug)
        if is_stored_only(concept):
            try:
                cv = self._stored_vectors(slug)
            except StaleVectors:
                cv = None
            if cv is None:
                raise InputError(f"{slug!r} is an imported control vector with no vectors for "
                                 f"{self.session.loaded.model_id}; import the file again for this model")
            return cv
        if concept.recipe is not None:
            return self._blend_recipe(concept, progress, token, _depth)
        try:
            cv = self._stored_vectors(slug)
            if cv is not None:
                return cv
        except StaleVectors:
            log.info("vectors for %r are stale; re-extracting", slug)
        except VectorMismatch as exc:
            log.info("stored vectors for %r do not fit this model (%s); re-extracting", slug, exc)
        except LibraryError as exc:  # unreadable file: a fresh extraction replaces it
            log.warning("stored vectors for %r are unreadable (%s); re-extracting", slug, exc)
        return self.extract_concept(concept, progress=progress, token=token, save=True)

    def _blend_recipe(self, concept: Concept, progress: Progress, token: Optional[CancelToken], depth: int) -> ConceptVectors:
        opts = concept.recipe_options or {}
        project_out = [str(s) for s in opts.get("project_out", []) or []]
        slugs = list(dict.fromkeys([s for s, _ in concept.recipe] + project_out))
        if concept.slug in slugs:
            raise InputError(f"mix {concept.slug!r} contains itself")
        parts = {s: self.concept_vectors(s, progress, token, depth + 1) for s in slugs}
        cv = blend(parts, concept.recipe, normalize=bool(opts.get("normalize", False)), project_out=project_out)
        cv.concept_fingerprint = concept.pairs_fingerprint()
        return cv

    def random_control_vectors(self, slug: str, seed: int = 0) -> ConceptVectors:
        """Matched-norm random directions for ``slug`` (see ``random_control``)."""
        return random_control(self.concept_vectors(slug), seed=seed)

    # ---- what a steering choice names: a slug, a mix or a random control ------------------------
    def resolve_vectors(self, concept: str, token: Optional[CancelToken] = None, normalize: bool = False,
                        project_out: Sequence[str] = ()) -> tuple[ConceptVectors, str]:
        """Vectors for a slug, a mix or a random control, and a label for them."""
        text = (concept or "").strip()
        if not text:
            raise InputError("choose a concept (or type a mix like happy:0.7, excited:0.3)")
        if text.startswith(RANDOM_PREFIX):
            slug = text[len(RANDOM_PREFIX):].strip()
            return self.random_control_vectors(slug), f"random control (norms of {slug})"
        if is_mix(text) or normalize or project_out:
            cv, recipe = self.mix_vectors(text, normalize=normalize, project_out=tuple(project_out))
            label = " + ".join(f"{w:g}×{s}" for s, w in recipe)
            if normalize:
                label += " (normalized)"
            if project_out:
                label += " without " + ", ".join(project_out)
            return cv, label
        return self.concept_vectors(text, token=token), text

    def _recommendation(self, concept: str) -> Optional[Recommendation]:
        """The library's recommendation of a named concept for the loaded model; None for a mix, a random
        control, an unknown name or a concept without one."""
        from app.library.slugs import model_key

        text = (concept or "").strip()
        lib = self.session.library
        if not text or is_mix(text) or text.startswith(RANDOM_PREFIX) or not lib.exists(text):
            return None
        return lib.get(text).recommended.get(model_key(self.session.loaded.model_id))

    def recommended_setting(self, concept: str, cv: ConceptVectors) -> tuple[int, float, bool, str]:
        """(layer, strength, relative, source) for the loaded model."""
        rec = self._recommendation(concept)
        if rec is not None:
            return rec.layer, rec.strength, rec.strength_mode == "relative", rec.source
        a, b = cv.recommended_layers
        layer = (a + b) // 2 if (a, b) != (0, 0) else cv.num_layers // 2
        return layer, DEFAULT_RELATIVE_STRENGTH, True, "default (middle of the recommended layer range)"

    def recommended_band_plan(self, concept: str) -> list[tuple[int, float]]:
        """[(layer, strength)] of the band layers of ``concept``'s recommended setting (each at the layer's
        strength); [] for none, a mix or a random control, and layers the model lacks dropped."""
        rec = self._recommendation(concept)
        if rec is None:
            return []
        n = self.session.loaded.num_layers
        return [(l, st) for l, st in rec.layer_plan()[1:] if 0 <= l < n]

    def recommended_band(self, concept: str) -> tuple[int, ...]:
        """The band layers alone (see ``recommended_band_plan``)."""
        return tuple(l for l, _ in self.recommended_band_plan(concept))

    def save_recommendation(self, concept: str, layer: int, strength: float, relative: bool = True,
                            source: str = "sweep") -> None:
        """Store a sweep's best setting in the concept (a user copy for shipped concepts)."""
        from app.library.slugs import model_key

        if is_mix(concept) or concept.startswith(RANDOM_PREFIX):
            raise InputError("recommendations can only be saved for a named concept")
        rec = Recommendation(layer=int(layer), strength=float(strength),
                             strength_mode="relative" if relative else "absolute", source=source)
        with self.session.jobs.lock:
            self.session.library.set_recommendation(concept.strip(), model_key(self.session.loaded.model_id), rec)

    # ---- mixing and comparing --------------------------------------------------------------
    def _check_known(self, slugs: Sequence[str], known: Sequence[str], what: str) -> None:
        import difflib

        for s in slugs:
            if s not in known:
                close = difflib.get_close_matches(s, known, n=3, cutoff=0.6)
                hint = f"; did you mean {', '.join(close)}?" if close else ""
                raise InputError(f"unknown concept {s!r} in {what}{hint}")

    def mix_vectors(self, text: str, normalize: bool = False,
                    project_out: Sequence[str] | str | None = ()) -> tuple[ConceptVectors, list[tuple[str, float]]]:
        """Blend the concepts named in ``text`` (e.g. ``happy:0.7, excited:0.3``)."""
        known = self._known_slugs()
        recipe = parse_mix(text, known)
        project_out = slug_list(project_out)
        self._check_known(project_out, known, "'project out'")
        slugs = list(dict.fromkeys([s for s, _ in recipe] + project_out))
        parts = {s: self.concept_vectors(s) for s in slugs}
        return blend(parts, recipe, normalize=normalize, project_out=project_out), recipe

    def save_mix(self, slug: str, name: str, text: str, normalize: bool = False,
                 project_out: Sequence[str] | str | None = (), overwrite: bool = False) -> Concept:
        """Save a mix as a concept (category "mix"); its vectors are blended when used."""
        from app.library import validate_slug

        validate_slug(slug)
        known = self._known_slugs()
        recipe = parse_mix(text, known)
        project_out = slug_list(project_out)
        self._check_known(project_out, known, "'project out'")
        for member in [s for s, _ in recipe] + project_out:
            if slug in self._recipe_closure(member):
                raise InputError(f"the mix {slug!r} would contain itself (through {member!r})")
        concept = mix_concept(slug, name, recipe, {"normalize": bool(normalize), "project_out": project_out})
        with self.session.jobs.lock:
            return self.session.library.save(concept, overwrite=overwrite)

    def _recipe_closure(self, slug: str, depth: int = 0) -> set[str]:
        """``slug`` and every concept its recipe reaches (empty recipe: just itself)."""
        out = {slug}
        if depth > MAX_RECIPE_DEPTH or not self.session.library.exists(slug):
            return out
        concept = self.session.library.get(slug)
        if concept.recipe is None or is_stored_only(concept):
            return out
        members = [s for s, _ in concept.recipe] + list((concept.recipe_options or {}).get("project_out", []) or [])
        for m in members:
            out |= self._recipe_closure(m, depth + 1)
        return out

    def cosine_matrix(self, slugs: Sequence[str], layer: int) -> tuple[list[str], np.ndarray]:
        """Cosine of the chosen concepts' vectors at ``layer`` (symmetric, ones on the diagonal)."""
        if not slugs:
            raise InputError("choose at least one concept to compare")
        return cosine_matrix({s: self.concept_vectors(s) for s in dict.fromkeys(slugs)}, layer)
