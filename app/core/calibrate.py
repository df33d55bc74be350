"""Recommended settings that generalize: chosen on calibration prompts, reported on others.

A cell (vectors, layer, relative strength) is scored on each prompt by the concept's JUDGE
(steered minus unsteered text, sign applied: > 0 is the right way) and by coherence (the
rules of app.core.scoring, plus distinct-2 >= 0.5 and no loop). Selection rule, on the
calibration prompts only: among cells coherent and clean on >= 80% of them, maximise
right-way fraction x mean judge change; ties -> a single layer, then the smaller strength.

The search is coarse-to-fine so all shipped concepts fit in about half an hour on 2 cores
(every stage batches the cells of ALL concepts that share a prompt, see ``cellbatch``):
1. depth: mean_diff at every 2nd layer, one strength, on the first calibration prompts;
2. methods: each extraction method at the best layers of stage 1, two strengths, same prompts;
3. fine: the best method at its best layers x five strengths, and a band (a smaller strength at
   the layer and at layers around it), on every calibration prompt.
The result is then REPORTED on the validation prompts (64 greedy tokens): right-way and
wrong-way fractions, mean and spread of the judge change, coherent share; the other methods
are validated at their own best stage-2 setting for the comparison.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence

import numpy as np

from app.core.cellbatch import Cell, generate_cells
from app.core.chat import encode, format_chat
from app.errors import InputError
from app.types import ConceptVectors

PROMPTS_DIR = Path(__file__).resolve().parents[2] / "assets" / "prompts"
MIN_SHARE = 0.8  # a cell must be coherent and clean on at least this share of prompts
MAX_PADDED_ROWS = 200  # rows of one left-padded batch (prompts x cells); KV memory ~12 MB a row


def load_prompts(name: str, folder: Path = PROMPTS_DIR) -> list[str]:
    """Prompts of ``assets/prompts/<name>.txt``: one per line, ``#`` comments and blanks skipped."""
    path = folder / f"{name}.txt"
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise InputError(f"cannot read the {name} prompts at {path}: {e.strerror or e}") from None
    return [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]


@dataclass
class CellStats:
    """One cell scored over a prompt set; ``changes[i]`` is the judge change on prompt i."""

    key: str
    layer: int
    strength: float
    changes: list[float] = field(default_factory=list)
    coherent: list[bool] = field(default_factory=list)
    clean: list[bool] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    band: tuple[int, ...] = ()  # more layers at the same relative strength (see cellbatch.Cell)

    @property
    def right_way(self) -> float:
        return float(np.mean(np.asarray(self.changes) > 0)) if self.changes else 0.0

    @property
    def wrong_way(self) -> float:
        return float(np.mean(np.asarray(self.changes) < 0)) if self.changes else 0.0

    @property
    def mean_change(self) -> float:
        return float(np.mean(self.changes)) if self.changes else 0.0

    @property
    def spread(self) -> float:
        return float(np.std(self.changes)) if self.changes else 0.0

    @property
    def coherent_share(self) -> float:
        return float(np.mean(self.coherent)) if self.coherent else 0.0

    @property
    def clean_share(self) -> float:
        return float(np.mean(self.clean)) if self.clean else 0.0

    @property
    def objective(self) -> float:
        return self.right_way * self.mean_change

    @property
    def eligible(self) -> bool:
        return self.coherent_share >= MIN_SHARE - 1e-9 and self.clean_share >= MIN_SHARE - 1e-9

    def summary(self, with_texts: bool = False) -> dict:
        d = {"method": self.key.split(":", 1)[-1], "layer": self.layer, "strength": self.strength,
             "n_prompts": len(self.changes), "right_way": round(self.right_way, 3),
             "wrong_way": round(self.wrong_way, 3), "mean_change": round(self.mean_change, 4),
             "spread": round(self.spread, 4), "coherent_share": round(self.coherent_share, 3),
             "clean_share": round(self.clean_share, 3),
             **({"band": list(self.band)} if self.band else {}),
             "changes": [round(c, 4) for c in self.changes], "clean": list(self.clean),
             "coherent": list(self.coherent)}
        if with_texts:
            d["texts"] = list(self.texts)
        return d


def select(stats: Sequence[CellStats]) -> Optional[CellStats]:
    """The selection rule of the module docstring; None when no cell is eligible."""
    good = [s for s in stats if s.eligible]
    if not good:
        return None
    return max(good, key=lambda s: (round(s.objective, 6), -len(s.band), -abs(s.strength), -s.layer))


def rank_layers(stats: Sequence[CellStats], k: int) -> list[int]:
    """The ``k`` layers whose best cell scores highest (eligible cells first)."""
    best: dict[int, tuple] = {}
    for s in stats:
        score = (s.eligible, round(s.objective, 6))
        if s.layer not in best or score > best[s.layer]:
            best[s.layer] = score
    return [l for l, _ in sorted(best.items(), key=lambda kv: (kv[1], -kv[0]), reverse=True)[:k]]


Judges = Mapping[str, Callable[[Sequence[str]], np.ndarray]]  # slug -> texts -> signed scores


Runner = Callable[[Sequence[int], Callable[[int], list]], list]  # (items, fn) -> [fn(item) ...]


def evaluate(lm, prompts: Sequence[str], vectors: Mapping[str, ConceptVectors], cells: Sequence[Cell],
             judges: Judges, max_tokens: int, keep_texts: bool = False,
             progress: Optional[Callable[[str], None]] = None,
             should_stop: Optional[Callable[[], bool]] = None,
             runner: Optional[Runner] = None, repetition_penalty: float = 1.0) -> dict[Cell, CellStats]:
    """Every cell on every prompt (one batch of all cells per prompt), judged against the baseline.

    A cell's key is ``"<slug>:<method>"``; ``judges[slug]`` scores its texts (higher = more
    of the concept). ``runner`` maps the per-prompt work over prompt indices: in order here, or
    split over the ranks of a distributed job (``app.core.distributed.run_json_items``).
    """
    out = {c: CellStats(c.key, c.layer, c.strength, band=c.band) for c in cells}
    if not cells:
        return out
    if runner is None:  # one process: every prompt's rows in shared left-padded batches
        results = [_judge_rows(base, texts, cells, judges)
                   for base, texts in generate_all(lm, prompts, vectors, cells, max_tokens, progress,
                                                   repetition_penalty)]
    else:  # spread over ranks (app.core.distributed): each rank judges whole prompts

        def one_prompt(i: int) -> list:
            if progress is not None:
                progress(f"prompt {i + 1}/{len(prompts)}: {len(cells)} cells")
            return _judge_prompt(lm, prompts[i], vectors, cells, judges, max_tokens, should_stop, repetition_penalty)

        results = runner(list(range(len(prompts))), one_prompt)
    for rows in results:
        for cell, (change, coherent, clean, text) in zip(cells, rows):
            st = out[cell]
            st.changes.append(change)
            st.coherent.append(coherent)
            st.clean.append(clean)
            if keep_texts:
                st.texts.append(text)
    return out


def _judge_rows(base, texts, cells: Sequence[Cell], judges: Judges) -> list:
    """[change, coherent, clean, text] per cell for one prompt (plain values: they travel as JSON)."""
    rows: list = [None] * len(cells)
    by_slug: dict[str, list[int]] = {}
    for j, c in enumerate(cells):
        by_slug.setdefault(c.key.split(":", 1)[0], []).append(j)
    for slug, idx in by_slug.items():
        scores = np.asarray(judges[slug]([base.text] + [texts[j].text for j in idx]), dtype=np.float64)
        for j, sc in zip(idx, scores[1:]):
            rows[j] = [float(sc - scores[0]), bool(texts[j].coherent), bool(texts[j].clean), texts[j].text]
    return rows


def _judge_prompt(lm, prompt: str, vectors: Mapping[str, ConceptVectors], cells: Sequence[Cell],
                  judges: Judges, max_tokens: int, should_stop, repetition_penalty: float = 1.0) -> list:
    tokens = encode(lm.tokenizer, format_chat(lm.tokenizer, prompt))
    base, texts = generate_cells(lm, tokens, vectors, cells, max_tokens, should_stop, repetition_penalty)
    return _judge_rows(base, texts, cells, judges)


def generate_all(lm, prompts, vectors, cells, max_tokens, progress, repetition_penalty: float = 1.0):
    """(baseline, cell texts) per prompt: all prompts' rows in left-padded batches of <= MAX_PADDED_ROWS."""
    from app.core.cellbatch import allowances, generate_padded, score_rows

    token_lists = [encode(lm.tokenizer, format_chat(lm.tokenizer, p)) for p in prompts]
    per = 1 + len(cells)
    row_allowance = allowances(vectors, [None, *cells])  # the same for every prompt
    step = max(1, MAX_PADDED_ROWS // per)
    results = []
    for s in range(0, len(prompts), step):
        chunk = token_lists[s:s + step]
        if progress is not None:
            progress(f"prompts {s + 1}-{s + len(chunk)}/{len(prompts)}: {len(cells)} cells, {per * len(chunk)} rows")
        rows = [t for t in chunk for _ in range(per)]
        plan = [c for _ in chunk for c in [None, *cells]]
        gen = generate_padded(lm, rows, vectors, plan, max_tokens, repetition_penalty)
        for i, t in enumerate(chunk):
            texts = score_rows(lm, t, gen[i * per:(i + 1) * per], row_allowance)
            results.append((texts[0], texts[1:]))
    return results


def pair_consistency(pos: np.ndarray, neg: np.ndarray, layer: int) -> float:
    """Mean pairwise cosine of the per-pair differences at ``layer`` (1 = every pair agrees)."""
    d = np.asarray(pos[layer], np.float64) - np.asarray(neg[layer], np.float64)
    n = np.linalg.norm(d, axis=1, keepdims=True)
    u = np.divide(d, n, out=np.zeros_like(d), where=n > 0)
    g = u @ u.T
    m = len(u)
    return float((g.sum() - np.trace(g)) / (m * (m - 1))) if m > 1 else float("nan")
