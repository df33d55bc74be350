"""Concepts in and out of the lab: YAML bundles and llama.cpp control vectors (GGUF).

Imported control vectors have no contrast pairs, but the library schema requires pairs or
a recipe. The simplest valid form is used: an imported concept is saved with category
``imported``, no pairs and the self-recipe ``[(slug, 1.0)]`` ("this concept is its own stored
vector"), with the source file in ``provenance``. Its vectors are stored with the concept's
fingerprint like any other, so ``ConceptOps.concept_vectors`` only ever loads them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

from app.core.extraction import typical_norms_for, utc_now
from app.core.gguf_io import ExportResult, export_control_vector, import_control_vector
from app.domain import limits
from app.errors import InputError
from app.service.concept_ops import ConceptOps
from app.service.jobs import CancelToken
from app.service.session import ModelSession
from app.types import Concept, ConceptVectors


class TransferOps:
    """Export a concept's vectors, import bundles and control vectors; writes under the session's lock."""

    def __init__(self, session: ModelSession, concepts: ConceptOps) -> None:
        self.session = session
        self.concepts = concepts

    # ---- llama.cpp control vectors ---------------------------------------------------------
    def export_gguf(self, slug: str, path: str | Path, layers: Optional[Sequence[int]] = None,
                    strength: Optional[float] = None, relative: bool = True, op: str = "add") -> ExportResult:
        """Write ``slug``'s vectors as a llama.cpp control vector (strength None: raw vectors)."""
        from app.core.interventions import check_exportable
        from app.core.steering import check_finite

        check_exportable(op)
        if strength is not None:
            strength = check_finite(strength, "strength", limits.strength_limit(relative))
        cv = self.concepts.concept_vectors(slug)
        hint = self.session.loaded.info().family
        return export_control_vector(cv, path, layers=layers, strength=strength, relative=relative, model_hint=hint)

    def import_bundle(self, text: str | bytes, slug: Optional[str] = None, overwrite: bool = False) -> str:
        """Import a YAML bundle; vectors it carries for the loaded model must fit that model.

        Parsed and validated once, without the model lock (it never touches the model), then
        written all at once under the library's writer lock.
        """
        from app.library.bundle import decode_bundle
        from app.library.slugs import model_key

        concept, vectors = decode_bundle(text, slug=slug)
        if self.session.is_loaded:
            lm = self.session.loaded
            mine = vectors.get(model_key(lm.model_id))
            if mine is not None and (mine.hidden_size != lm.hidden_size or mine.num_layers != lm.num_layers):
                raise InputError(
                    f"the bundle's vectors for {lm.model_id} have {mine.num_layers} layers x width {mine.hidden_size}, "
                    f"but the model has {lm.num_layers} layers x width {lm.hidden_size}; the bundle was not imported")
        with self.session.jobs.lock:  # parsed and checked above without it; only the write waits for the model
            self.session.library.save_with_vectors(concept, vectors, overwrite=overwrite)
        return concept.slug

    def import_gguf(self, path: str | Path, slug: str, name: Optional[str] = None, overwrite: bool = False,
                    token: Optional[CancelToken] = None) -> str:
        """Import a llama.cpp control vector as an "imported" concept for the loaded model."""
        from app.library import ConceptExists, validate_slug

        validate_slug(slug)
        if self.session.library.exists(slug) and not overwrite:
            raise ConceptExists(f"a concept named {slug!r} already exists; choose another slug or overwrite it")
        lm = self.session.loaded
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
        typical = self.session.jobs.run(lambda tok: typical_norms_for(lm, should_stop=tok), token)
        info = lm.info()
        cv = ConceptVectors(
            model_id=info.model_id, model_fingerprint=info.fingerprint, method="imported",
            vectors=vectors, typical_norms=typical, concept_fingerprint="",
            quality=[], recommended_layers=(present[0], present[-1]), created_at=utc_now(),
            lab_version=__import__("app").__version__,
            extra={"source_file": file_name, "present_layers": present, "model_hint": meta.get("model_hint")},
        )
        with self.session.jobs.lock:
            self.session.library.save_with_vectors(concept, {lm.model_id: cv}, overwrite=overwrite)  # both or neither
        return slug
