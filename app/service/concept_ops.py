"""Concept work on the loaded model: extract, load-or-extract, mix, compare, GGUF in and out.

``ConceptOps`` is a mixin of ``ModelService``: it uses ``self.jobs`` (the model lock),
``self.loaded`` and ``self.library`` and keeps no state of its own.

Imported control vectors have no contrast pairs, but the library schema requires pairs or
a recipe. The simplest valid form is used: an imported concept is saved with category
``imported``, no pairs and the self-recipe ``[(slug, 1.0)]`` ("this concept is its own stored
vector"), with the source file in ``provenance``. Its vectors are stored with the concept's
fingerprint like any other; ``concept_vectors`` only ever loads them (never re-extracts or
blends an imported concept).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from app.core.extraction import METHODS, extract, random_control, typical_norms_for, unit_rows, utc_now
from app.core.methods import method_choices
from app.core.gguf_io import ExportResult, export_control_vector, import_control_vector
from app.core.mixing import blend, cosine_matrix, mix_concept, parse_mix
from app.domain import limits
from app.errors import InputError
from app.types import Concept, ConceptVectors

log = logging.getLogger("steering_lab.concepts")

MAX_PAIR_TEXT = limits.PAIR_TEXT_CHARS
MAX_PAIRS = limits.PAIRS_PER_CONCEPT
MAX_RECIPE_DEPTH = limits.MIX_DEPTH
MAX_EXTRACT_TOKENS = limits.EXTRACT_TOKENS

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
    """Mixin for ``ModelService`` (needs ``self.jobs``, ``self.loaded``, ``self.library``)."""

    jobs: Any
    loaded: Any
    library: Any

    # ---- helpers ---------------------------------------------------------------------------
    def _model_key_args(self) -> tuple[str, str, int, int]:
        lm = self.loaded
        return lm.model_id, lm.info().fingerprint, lm.hidden_size, lm.num_layers

    def _stored_vectors(self, slug: str) -> Optional[ConceptVectors]:
        """This model's stored vectors for ``slug``; raises StaleVectors / VectorMismatch."""
        return self.library.load_vectors(slug, *self._model_key_args())

    def _other_vectors(self, exclude: str) -> dict[str, ConceptVectors]:
        """Current vectors of every other concept for this model (skips missing / stale ones)."""
        from app.library import LibraryError

        out = {}
        for summary in self.library.list():
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
        return [s.slug for s in self.library.list()]

    def _check_extraction_size(self, concept: Concept) -> int:
        """Bound the work by tokens, not characters: 64 long pairs once held the model for 15 minutes.

        Counted outside the model lock (the tokenizer is not MLX); stops counting at the limit.
        """
        from app.core.chat import encode

        tok = self.loaded.tokenizer
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
        token: Any = None,
        save: bool = True,
    ) -> ConceptVectors:
        """Extract vectors for every layer (``method`` None: the concept's own ``method:``, else
        mean_diff); with ``save`` store them when the concept is in the library unchanged (a
        Concept edited but not yet saved is extracted, not stored)."""
        concept = self.library.get(slug_or_concept) if isinstance(slug_or_concept, str) else slug_or_concept
        method = method or concept.method or "mean_diff"
        validate_for_extraction(concept, method)
        self._check_extraction_size(concept)
        others = self._other_vectors(concept.slug)
        needs = METHODS[method].needs
        opposite = self._opposite(concept) if "opposite_pos" in needs else None
        category = self._category_units(concept, others) if "category_units" in needs else None

        def job(tok) -> ConceptVectors:
            return extract(self.loaded, concept, method, progress=progress, should_stop=tok, others=others,
                           opposite=opposite, category_units=category)

        cv = self.jobs.run(job, token)
        if save:
            with self.jobs.lock:  # a library write, like every other, under the model lock
                stored = self.library.exists(concept.slug) and \
                    self.library.get(concept.slug).pairs_fingerprint() == cv.concept_fingerprint
                if stored:
                    self.library.save_vectors(concept.slug, self.loaded.model_id, cv)
            if not stored:
                log.info("vectors for %r not stored: the concept is not saved in the library as extracted",
                         concept.slug)
        return cv

    def _opposite(self, concept: Concept) -> Concept:
        """The opposite concept; a form copy of a library concept inherits the library's ``opposite:``."""
        if not concept.opposite and self.library.exists(concept.slug):
            concept = self.library.get(concept.slug)
        if not concept.opposite:
            raise InputError(f"the bipolar method needs an opposite concept: set `opposite:` for {concept.slug!r}")
        return self.library.get(concept.opposite)

    def _category_units(self, concept: Concept, others: dict[str, ConceptVectors]) -> np.ndarray:
        """[L, K, H] unit vectors of the other concepts of the same category (for no_shared)."""
        mates = [cv for s, cv in others.items()
                 if self.library.get(s).category == concept.category and cv.num_layers == self.loaded.num_layers]
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

        return load_calibration(model_key(self.loaded.model_id))

    def concept_vectors(self, slug: str, progress: Progress = None, token: Any = None,
                        _depth: int = 0) -> ConceptVectors:
        """Stored vectors for the loaded model; extracted (and saved) when missing or stale;
        blended from the recipe for mixes."""
        from app.library import LibraryError, StaleVectors, VectorMismatch

        if _depth > MAX_RECIPE_DEPTH:
            raise InputError(f"mix {slug!r} nests more than {MAX_RECIPE_DEPTH} mixes deep (a mix that contains itself?)")
        concept = self.library.get(slug)
        if is_stored_only(concept):
            try:
                cv = self._stored_vectors(slug)
            except StaleVectors:
                cv = None
            if cv is None:
                raise InputError(f"{slug!r} is an imported control vector with no vectors for "
                                 f"{self.loaded.model_id}; import the file again for this model")
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

    def _blend_recipe(self, concept: Concept, progress: Progress, token: Any, depth: int) -> ConceptVectors:
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
        with self.jobs.lock:
            return self.library.save(concept, overwrite=overwrite)

    def _recipe_closure(self, slug: str, depth: int = 0) -> set[str]:
        """``slug`` and every concept its recipe reaches (empty recipe: just itself)."""
        out = {slug}
        if depth > MAX_RECIPE_DEPTH or not self.library.exists(slug):
            return out
        concept = self.library.get(slug)
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

    # ---- llama.cpp control vectors ---------------------------------------------------------
    def export_gguf(self, slug: str, path: str | Path, layers: Optional[Sequence[int]] = None,
                    strength: Optional[float] = None, relative: bool = True, op: str = "add") -> ExportResult:
        """Write ``slug``'s vectors as a llama.cpp control vector (strength None: raw vectors)."""
        from app.core.interventions import check_exportable
        from app.core.steering import check_finite

        check_exportable(op)
        if strength is not None:
            strength = check_finite(strength, "strength", limits.strength_limit(relative))
        cv = self.concept_vectors(slug)
        hint = self.loaded.info().family
        return export_control_vector(cv, path, layers=layers, strength=strength, relative=relative, model_hint=hint)

    def import_bundle(self, text: str | bytes, slug: Optional[str] = None, overwrite: bool = False) -> str:
        """Import a YAML bundle; vectors it carries for the loaded model must fit that model.

        Parsed and validated once, without the model lock (it never touches the model), then
        written all at once under the library's writer lock.
        """
        from app.library.bundle import decode_bundle
        from app.library.slugs import model_key

        concept, vectors = decode_bundle(text, slug=slug)
        if self.is_loaded:
            lm = self.loaded
            mine = vectors.get(model_key(lm.model_id))
            if mine is not None and (mine.hidden_size != lm.hidden_size or mine.num_layers != lm.num_layers):
                raise InputError(
                    f"the bundle's vectors for {lm.model_id} have {mine.num_layers} layers x width {mine.hidden_size}, "
                    f"but the model has {lm.num_layers} layers x width {lm.hidden_size}; the bundle was not imported")
        with self.jobs.lock:  # parsed and checked above without it; only the write waits for the model
            self.library.save_with_vectors(concept, vectors, overwrite=overwrite)
        return concept.slug

    def import_gguf(self, path: str | Path, slug: str, name: Optional[str] = None, overwrite: bool = False,
                    token: Any = None) -> str:
        """Import a llama.cpp control vector as an "imported" concept for the loaded model."""
        from app.library import ConceptExists, validate_slug

        validate_slug(slug)
        if self.library.exists(slug) and not overwrite:
            raise ConceptExists(f"a concept named {slug!r} already exists; choose another slug or overwrite it")
        lm = self.loaded
        vectors, present, meta = import_control_vector(path, lm.num_layers, lm.hidden_size)
        file_name = Path(path).name
        span = f"{present[0]}-{present[-1]}" if len(present) > 1 else str(present[0])
        concept = Concept(
            slug=slug,
            name=(name or f"Imported {Path(path).stem}")[:100],
            description=f"llama.cpp control vector imported from {file_name} (layers {span}).",
            category="imported",
            pairs=[],
            tags=["imported"],
            provenance={"file": file_name, "model_hint": meta.get("model_hint"),
                        "layers": present, "imported_at": utc_now()},
            recipe=[(slug, 1.0)],
        )
        typical = self.jobs.run(lambda tok: typical_norms_for(lm, should_stop=tok), token)
        info = lm.info()
        cv = ConceptVectors(
            model_id=info.model_id, model_fingerprint=info.fingerprint, method="imported",
            vectors=vectors, typical_norms=typical, concept_fingerprint="",
            quality=[], recommended_layers=(present[0], present[-1]), created_at=utc_now(),
            lab_version=__import__("app").__version__,
            extra={"source_file": file_name, "present_layers": present, "model_hint": meta.get("model_hint")},
        )
        with self.jobs.lock:
            self.library.save_with_vectors(concept, {lm.model_id: cv}, overwrite=overwrite)  # both or neither
        return slug
