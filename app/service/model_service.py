"""The service assembled: one ``ModelSession`` and the ops objects that work on it.

Composition, not inheritance: each ops object is handed the session (and the ops it builds on)
explicitly, so what it may touch is written in its constructor. ``Lab`` is the facade the UI
and the CLI use; tests and benchmarks may drive this object directly, so it names the ops'
methods once here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import app.core  # noqa: F401  (loads the fast BLAS before MLX)
from app.core import registry
from app.core.models import LoadedModel
from app.errors import Cancelled, InputError, ModelLoadError
from app.service.calibration_ops import CalibrationOps
from app.service.concept_ops import ConceptOps
from app.service.explore_ops import ExploreOps
from app.service.generation_ops import GenerationOps
from app.service.intervention_ops import InterventionOps, LensOps
from app.service.judge_ops import JudgeOps
from app.service.session import ModelSession
from app.service.transfer_ops import TransferOps

if TYPE_CHECKING:  # the library is imported lazily, as the session does
    from app.library import ConceptLibrary


class ModelService:
    def __init__(self, loaded: Optional[LoadedModel] = None, library: Optional["ConceptLibrary"] = None,
                 allow_model_paths: bool = True) -> None:
        self.session = session = ModelSession(loaded, library, allow_model_paths)
        self.concept_ops = concepts = ConceptOps(session)
        self.transfer_ops = TransferOps(session, concepts)
        self.judge_ops = judges = JudgeOps(session)
        self.intervention_ops = interventions = InterventionOps(session, concepts)
        self.lens_ops = lens = LensOps(session)
        self.generation_ops = GenerationOps(session, concepts, interventions, judges)
        self.explore_ops = ExploreOps(session, concepts, lens)
        self.calibration_ops = CalibrationOps(session)
        self.jobs = session.jobs  # the one JobRunner: the model lock and every cancel token
        self._name_the_ops()

    def _name_the_ops(self) -> None:
        """The ops' methods under the service's names (bound methods: nothing is looked up at call time)."""
        s, c, t = self.session, self.concept_ops, self.transfer_ops
        j, i, g, e = self.judge_ops, self.intervention_ops, self.generation_ops, self.explore_ops
        self.load, self.switch_model, self.info = s.load, s.switch_model, s.info
        self.format_chat, self.tokenize_chat = s.format_chat, s.tokenize_chat
        self.extract_concept, self.concept_vectors, self.resolve_vectors = (
            c.extract_concept, c.concept_vectors, c.resolve_vectors)
        self.mix_vectors, self.save_mix, self.random_control_vectors = c.mix_vectors, c.save_mix, c.random_control_vectors
        self.cosine_matrix, self.extraction_methods = c.cosine_matrix, c.extraction_methods
        self.recommended_setting, self.save_recommendation = c.recommended_setting, c.save_recommendation
        self.recommended_band = c.recommended_band
        self.recommended_band_plan = c.recommended_band_plan
        self.calibration_report, self.calibration_reports = c.calibration_report, c.calibration_reports
        self.export_gguf, self.import_gguf, self.import_bundle = t.export_gguf, t.import_gguf, t.import_bundle
        self.judge_for, self.judge_spec, self.judge_summary = j.judge_for, j.judge_spec, j.judge_summary
        self.operations, self.typical_projection = i.operations, i.typical_projection
        self.vector_lens = self.lens_ops.vector_lens
        self.build_plan, self.compare_stream, self.compare, self.sweep = g.build_plan, g.compare_stream, g.compare, g.sweep
        self.explore, self.capture = e.explore, e.capture
        self.calibrate = self.calibration_ops.calibrate

    # ---- the session's state, read through ------------------------------------------------
    @property
    def loaded(self) -> LoadedModel:
        return self.session.loaded

    @property
    def is_loaded(self) -> bool:
        return self.session.is_loaded

    @property
    def library(self) -> "ConceptLibrary":
        return self.session.library

    @property
    def switch_notice(self) -> Optional[str]:
        return self.session.switch_notice

    def list_models(self) -> list[registry.ModelEntry]:
        return registry.list_models()

    def cancel(self) -> int:
        """Cancel every running or queued job (the Stop button of the whole server)."""
        return self.jobs.cancel_all()


__all__ = ["ModelService", "ModelSession", "InputError", "Cancelled", "ModelLoadError"]
