"""The one model session of a lab: the loaded model, its lock and cancel registry, the library.

Every ops object of the service (concepts, generation, exploring, judges, interventions) is
handed this session explicitly; none keeps a model or a lock of its own, so a model switch is
seen by all of them at once and every library write takes the same lock as the runs.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Optional

import app.core  # noqa: F401  (loads the fast BLAS before MLX)
from app import paths
from app.core import registry
from app.core.chat import encode, format_chat
from app.core.models import LoadedModel, load_model
from app.errors import ModelLoadError
from app.service.jobs import CancelToken, JobRunner
from app.types import ModelInfo

if TYPE_CHECKING:
    from app.library import ConceptLibrary

log = logging.getLogger("steering_lab.service")


class ModelSession:
    """The model (``loaded``), the one ``JobRunner`` (``jobs``: the model lock, per-page cancel), the library."""

    def __init__(self, loaded: Optional[LoadedModel] = None, library: Optional["ConceptLibrary"] = None,
                 allow_model_paths: bool = True) -> None:
        self.jobs = JobRunner()
        self._loaded = loaded
        self._library = library
        # The web lab sets this False unless started with --allow-model-paths: a browser tab may
        # then switch only between the prepared models, never to an arbitrary server folder.
        self.allow_model_paths = allow_model_paths
        self.switch_notice: Optional[str] = None  # shown to every user after a switch

    @property
    def library(self) -> "ConceptLibrary":
        """The concept library: the user's folder over the shipped concepts and vectors."""
        if self._library is None:
            from app.library import ConceptLibrary

            self._library = ConceptLibrary(paths.user_library_dir(), paths.SHIPPED_CONCEPTS, paths.SHIPPED_VECTORS)
        return self._library

    # ---- the model --------------------------------------------------------------------------
    @property
    def loaded(self) -> LoadedModel:
        if self._loaded is None:
            raise ModelLoadError("no model is loaded; load one from the model picker")
        return self._loaded

    @property
    def is_loaded(self) -> bool:
        return self._loaded is not None

    def info(self) -> ModelInfo:
        return self.loaded.info()

    def model_key_args(self) -> tuple[str, str, int, int]:
        """(model id, fingerprint, width, layers): what the library checks stored vectors against."""
        lm = self.loaded
        return lm.model_id, lm.info().fingerprint, lm.hidden_size, lm.num_layers

    def load(self, model: str = "") -> ModelInfo:
        """Load (or switch to) a model; on failure the previous model stays loaded."""

        def job(token: CancelToken) -> ModelInfo:
            try:
                entry = registry.resolve(model)
            except FileNotFoundError as exc:
                raise ModelLoadError(f"{exc}. {self.available_hint()}") from exc
            try:
                loaded = load_model(entry.model_id, entry.path)
            except ModelLoadError as exc:
                raise ModelLoadError(f"{exc}. {self.available_hint()}") from exc
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
                + self.available_hint())
        before = self._loaded.model_id if self._loaded is not None else None
        info = self.load(text)
        if info.model_id != before:
            self.switch_notice = (f"The model was switched to {info.model_id} at {time.strftime('%H:%M')} "
                                  "for every user of this lab.")
            log.warning("model switched from %s to %s by a browser tab", before, info.model_id)
        return info

    @staticmethod
    def available_hint() -> str:
        ids = [e.model_id for e in registry.list_models()]
        if not ids:
            return "No models are prepared yet: run ./setup_local_cache.sh"
        return "Available: " + ", ".join(ids)

    # ---- text -------------------------------------------------------------------------------
    def format_chat(self, user: str, system: Optional[str] = None) -> str:
        return format_chat(self.loaded.tokenizer, user, system)

    def tokenize_chat(self, user: str, system: Optional[str] = None) -> list[int]:
        return encode(self.loaded.tokenizer, self.format_chat(user, system))
