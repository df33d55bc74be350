"""The one stateful object of the lab: the loaded model, its lock, cancellation, the library.

The UI and the CLI call only this; all numerical work is in ``app.core``.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, Optional, Sequence

import app.core  # noqa: F401  (loads the fast BLAS before MLX)
from app import paths
from app.domain.checks import validate_prompts, validate_text
from app.core import registry
from app.core.capture import CaptureResult, capture
from app.core.chat import encode, format_chat, pad_id
from app.core.models import LoadedModel, load_model
from app.errors import Cancelled, InputError, ModelLoadError
from app.service.concept_ops import ConceptOps
from app.service.explore_ops import ExploreOps
from app.service.generation_ops import GenerationOps
from app.service.jobs import CancelToken, JobRunner
from app.types import ModelInfo

log = logging.getLogger("steering_lab.service")


class ModelService(GenerationOps, ExploreOps, ConceptOps):
    def __init__(self, loaded: Optional[LoadedModel] = None, library: Any = None, allow_model_paths: bool = True):
        self.jobs = JobRunner()
        self._loaded = loaded
        self._library = library
        # The web lab sets this False unless started with --allow-model-paths: a browser tab may
        # then switch only between the prepared models, never to an arbitrary server folder.
        self.allow_model_paths = allow_model_paths
        self.switch_notice: Optional[str] = None  # shown to every user after a switch

    @property
    def library(self):
        """The concept library: the user's folder over the shipped concepts and vectors."""
        if self._library is None:
            from app.library import ConceptLibrary

            self._library = ConceptLibrary(paths.user_library_dir(), paths.SHIPPED_CONCEPTS, paths.SHIPPED_VECTORS)
        return self._library

    # ---- models -------------------------------------------------------------------------
    @property
    def loaded(self) -> LoadedModel:
        if self._loaded is None:
            raise ModelLoadError("no model is loaded; load one from the model picker")
        return self._loaded

    @property
    def is_loaded(self) -> bool:
        return self._loaded is not None

    def list_models(self) -> list[registry.ModelEntry]:
        return registry.list_models()

    def load(self, model: str = "") -> ModelInfo:
        """Load (or switch to) a model; on failure the previous model stays loaded."""

        def job(token: CancelToken) -> ModelInfo:
            try:
                entry = registry.resolve(model)
            except FileNotFoundError as exc:
                raise ModelLoadError(f"{exc}. {self._available_hint()}") from exc
            try:
                loaded = load_model(entry.model_id, entry.path)
            except ModelLoadError as exc:
                raise ModelLoadError(f"{exc}. {self._available_hint()}") from exc
            self._loaded = loaded
            log.info("loaded %s (%s layers, hidden %s, %s)", entry.model_id, loaded.num_layers,
                     loaded.hidden_size, loaded.dtype)
            return loaded.info()

        return self.jobs.run(job)

    def switch_model(self, model: str, token: Optional[CancelToken] = None) -> ModelInfo:
        """A browser's model switch: one action for the whole server, announced to every user.

        Without ``allow_model_paths`` only prepared models can be chosen, and the message for
        anything else is the same whether or not such a path exists on the server.
        """
        text = (model or "").strip()
        prepared = [e.model_id for e in registry.list_models()]
        if not self.allow_model_paths and text not in ("", "default", *prepared):
            raise ModelLoadError(
                f"{text[:80]!r} is not one of the prepared models of this server; it was started without "
                "--allow-model-paths, so other folders and hub ids cannot be loaded from the page. "
                + self._available_hint())
        before = self._loaded.model_id if self._loaded is not None else None
        info = self.load(text)
        if info.model_id != before:
            self.switch_notice = (f"The model was switched to {info.model_id} at {time.strftime('%H:%M')} "
                                  "for every user of this lab.")
            log.warning("model switched from %s to %s by a browser tab", before, info.model_id)
        return info

    def _available_hint(self) -> str:
        ids = [e.model_id for e in registry.list_models()]
        if not ids:
            return "No models are prepared yet: run ./setup_local_cache.sh"
        return "Available: " + ", ".join(ids)

    def info(self) -> ModelInfo:
        return self.loaded.info()

    # ---- text ---------------------------------------------------------------------------
    def format_chat(self, user: str, system: Optional[str] = None) -> str:
        return format_chat(self.loaded.tokenizer, user, system)

    def tokenize_chat(self, user: str, system: Optional[str] = None) -> list[int]:
        return encode(self.loaded.tokenizer, self.format_chat(user, system))

    def token_strings(self, tokens: Sequence[int]) -> list[str]:
        tok = self.loaded.tokenizer
        return [tok.decode([t]) for t in tokens]

    # ---- reading the residual stream ----------------------------------------------------
    def capture(
        self,
        prompts: Sequence[str],
        system: Optional[str] = None,
        chat: bool = True,
        layers: Optional[Sequence[int]] = None,
        progress: Optional[Callable[[int, int], None]] = None,
        token: Optional[CancelToken] = None,
    ) -> CaptureResult:
        """Residual stream after every layer for ``prompts`` in one batched pass."""
        validate_prompts(prompts)

        def job(tok: CancelToken) -> CaptureResult:
            lm = self.loaded
            token_lists = [
                encode(lm.tokenizer, format_chat(lm.tokenizer, p, system)) if chat else encode(lm.tokenizer, p)
                for p in prompts
            ]
            return capture(lm.model, token_lists, pad=pad_id(lm.tokenizer), layers=layers,
                           progress=progress, should_stop=tok)

        return self.jobs.run(job, token)

    def cancel(self) -> int:
        """Cancel every running or queued job (the Stop button)."""
        return self.jobs.cancel_all()


__all__ = ["ModelService", "InputError", "Cancelled", "ModelLoadError", "validate_text", "validate_prompts", "paths"]
