"""Plain data types shared by every layer of the lab.

Numpy only (no MLX, no Gradio), so the library, the service and the UI can all
speak the same language without pulling in the model runtime.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

CATEGORIES = ("emotion", "style", "persona", "brevity", "custom", "mix", "imported", "control")


def steered_layers(layer: int, band: Any = ()) -> tuple[int, ...]:
    """Every layer a setting steers: its layer and its band's, sorted, each once (the one rule for a band)."""
    return tuple(sorted({int(layer), *(int(l) for l in band)}))


def layers_label(layer: int, band: Any = ()) -> str:
    """'12' for one layer; every steered layer of a band: '8,10,12,14,16'."""
    return ",".join(str(l) for l in steered_layers(layer, band))


@dataclass(frozen=True)
class ContrastPair:
    """One example of the concept (positive) against a matched example without it (negative)."""

    positive: str
    negative: str


@dataclass(frozen=True)
class SystemPromptPair:
    """Optional system prompts that frame every positive / negative example."""

    positive: str
    negative: str


@dataclass(frozen=True)
class Recommendation:
    """A layer and strength that steer well for one model (found by a sweep or by hand)."""

    layer: int
    strength: float
    strength_mode: str = "relative"  # "relative" | "absolute"
    source: str = "sweep"  # how it was found
    band: tuple[int, ...] = ()  # more layers steered with the same strength (a calibrated band)

    def layer_plan(self) -> list[tuple[int, float]]:
        """[(layer, strength)] to steer with: the layer, then each other band layer at the same strength."""
        return [(self.layer, self.strength)] + [(l, self.strength) for l in steered_layers(self.layer, self.band)
                                                if l != self.layer]


JUDGE_KINDS = ("sentiment", "lexicon", "words", "length", "readability", "probe")
READABILITY_METRICS = (
    "flesch_reading_ease", "flesch_kincaid_grade", "gunning_fog", "smog_index",
    "coleman_liau_index", "automated_readability_index", "dale_chall_readability_score",
)
PROBE_MIN_PAIRS = 4


@dataclass(frozen=True)
class JudgeSpec:
    """How a concept's effect is judged independently of its vector (see app.core.judges).

    ``sign`` says which way is "more of the concept": +1 higher raw score, -1 lower. Only the
    fields of the chosen ``kind`` are used: ``categories`` (lexicon), ``words`` (words),
    ``metric`` (readability), ``layer`` (probe; None = the model's middle layer).
    """

    kind: str
    sign: int = 1
    categories: tuple[str, ...] = ()
    words: tuple[str, ...] = ()
    metric: str = ""
    layer: Optional[int] = None


@dataclass
class Concept:
    """A named concept defined by contrast pairs; vectors are stored separately per model."""

    slug: str
    name: str
    description: str = ""
    category: str = "custom"
    pairs: list[ContrastPair] = field(default_factory=list)
    system_prompts: Optional[SystemPromptPair] = None
    tags: list[str] = field(default_factory=list)
    provenance: dict[str, Any] = field(default_factory=dict)
    recommended: dict[str, Recommendation] = field(default_factory=dict)  # model key -> rec
    recipe: Optional[list[tuple[str, float]]] = None  # set for concepts saved from a mix
    recipe_options: dict[str, Any] = field(default_factory=dict)
    method: Optional[str] = None  # extraction method the shipped vectors use (chosen by calibration)
    opposite: Optional[str] = None  # slug of the opposite concept (for the bipolar method)
    judge: Optional[JudgeSpec] = None  # how its effect is judged; None = the lab's default

    def pairs_fingerprint(self) -> str:
        """Hash of everything extraction reads; a vector whose fingerprint differs is stale."""
        payload = {
            "pairs": [[p.positive, p.negative] for p in self.pairs],
            "system": [self.system_prompts.positive, self.system_prompts.negative]
            if self.system_prompts
            else None,
            "recipe": self.recipe,
            "recipe_options": self.recipe_options or None,
        }
        blob = json.dumps(payload, sort_keys=True, ensure_ascii=False).encode("utf-8")
        return hashlib.sha256(blob).hexdigest()[:16]


@dataclass
class LayerQuality:
    """How well one layer separates the concept's positive and negative prompts."""

    layer: int
    vector_norm: float
    typical_norm: float  # mean residual-stream norm of a token at this layer
    d_prime: float  # separation of positive vs negative projections, in pooled std units
    loo_accuracy: float  # leave-one-out sign accuracy over pairs
    pc1_share: float  # share of variance of the paired differences on their first PC
    cosine_to_others: dict[str, float] = field(default_factory=dict)

    @property
    def relative_norm(self) -> float:
        return self.vector_norm / self.typical_norm if self.typical_norm > 0 else 0.0


@dataclass
class ConceptVectors:
    """One steering vector per layer for one model, plus what is needed to trust and scale it.

    ``vectors[i]`` is the direction added to the OUTPUT of ``model.layers[i]``.
    ``typical_norms[i]`` is the mean residual norm of a token there; a relative strength s
    adds ``s * typical_norms[i] * unit(vectors[i])``.
    """

    model_id: str
    model_fingerprint: str
    method: str
    vectors: np.ndarray  # float32 [num_layers, hidden]
    typical_norms: np.ndarray  # float32 [num_layers]
    concept_fingerprint: str = ""
    quality: list[LayerQuality] = field(default_factory=list)
    recommended_layers: tuple[int, int] = (0, 0)  # inclusive range derived from quality
    created_at: str = ""
    lab_version: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def num_layers(self) -> int:
        return int(self.vectors.shape[0])

    @property
    def hidden_size(self) -> int:
        return int(self.vectors.shape[1])

    @property
    def norms(self) -> np.ndarray:
        return np.linalg.norm(self.vectors, axis=1).astype(np.float32)

    def unit(self, layer: int) -> np.ndarray:
        v = self.vectors[layer]
        n = float(np.linalg.norm(v))
        return v / n if n > 0 else v


@dataclass(frozen=True)
class GenerationParams:
    max_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    repetition_penalty: float = 1.0  # 1.0 = off; > 1 lowers the logits of the last tokens (app.core.repetition_penalty)


@dataclass(frozen=True)
class ModelInfo:
    model_id: str
    family: str
    num_layers: int
    hidden_size: int
    dtype: str
    has_chat_template: bool
    blas: str
    device: str
    fingerprint: str
    vocab_size: int = 0
    path: str = ""

    def as_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


@dataclass
class ComparisonChunk:
    """One streaming update of a side-by-side run: both texts so far, token by token."""

    baseline_text: str
    steered_text: str
    baseline_pieces: list[str] = field(default_factory=list)  # decoded text of each token
    steered_pieces: list[str] = field(default_factory=list)
    baseline_scores: list[float] = field(default_factory=list)  # projection on the concept per token
    steered_scores: list[float] = field(default_factory=list)
    divergence: Optional[int] = None  # index of the first generated token that differs
    prompted_text: Optional[str] = None  # unsteered, under the concept's system prompt (if asked)
    prompted_pieces: list[str] = field(default_factory=list)
    done: bool = False
    stats: dict[str, Any] = field(default_factory=dict)
    steered_gates: list[float] = field(default_factory=list)  # conditional steering: 1.0 where the gate was open
    applied: list[dict[str, Any]] = field(default_factory=list)  # where the intervention acted (final chunk)
    effects: list[dict[str, Any]] = field(default_factory=list)  # per-token KL / promoted tokens (final chunk)
