"""The calibration search through the lab: choose method, layer and strength per concept, then store them.

See app.core.calibrate for the selection rule and app.core.calib_search for the coarse-to-fine
search. The search runs as one job under the model lock; what it chooses is written like every
other library write, under the same lock: ``save`` into the user's library, ``ship``
(maintainers) into the shipped concepts and vectors and the report into assets/calibration.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import json
import time
from pathlib import Path
from typing import Callable, Optional

from app import paths
from app.core.calib_search import COMPARED_METHODS, SearchPlan, build_variants, run_search
from app.core.calibrate import load_prompts
from app.core.judges import build_judge, default_spec, judge_scores
from app.domain.methods import get_method
from app.domain.requests import CalibrateRequest
from app.errors import InputError
from app.service.jobs import CancelToken
from app.service.session import ModelSession
from app.types import Concept, ConceptVectors, Recommendation, layers_label

CALIBRATION_DIR = "assets/calibration"
Echo = Callable[[str], None]


def search_plan(req: CalibrateRequest) -> SearchPlan:
    """The request's sizes as a SearchPlan; every method is checked against the registry."""
    methods = req.methods or COMPARED_METHODS
    for m in methods:
        get_method(m)
    if "mean_diff" not in methods:
        raise InputError("--methods must include mean_diff (the depth scan uses it)")
    kw: dict = {}
    if req.layers is not None:
        kw["coarse_layers"] = req.layers
    if req.strengths is not None:
        kw["fine_strengths"] = req.strengths
    if req.coarse_strengths is not None:
        kw["coarse_strengths"] = kw["method_strengths"] = req.coarse_strengths
    if req.band_strengths is not None:
        kw["band_strengths"] = req.band_strengths
    return SearchPlan(coarse_prompts=req.coarse_prompts, coarse_tokens=req.coarse_tokens, top_layers=req.top_layers,
                      cal_tokens=req.max_tokens, val_tokens=req.val_tokens, methods=tuple(methods),
                      validate_all_methods=req.validate_all_methods, repetition_penalty=req.repetition_penalty, **kw)


def _runner(distributed: bool):
    """(runner for calibrate.evaluate, is this the reporting rank, log prefix)."""
    if not distributed:
        return None, True, ""
    from app.core import distributed as dist

    grp = dist.group()
    return functools.partial(dist.run_json_items, grp=grp), dist.is_main(grp), f" rank {grp.rank()} of {grp.size()}:"


def summary_line(slug: str, r: dict) -> str:
    v = r["validation"]
    band = r.get("band", ())
    where = f"{'layers' if band else 'layer'} {layers_label(r['layer'], band)}"
    return (f"{slug}: {r['method']} {where} strength {float(r['strength']):g}; validation right way "
            f"{v['right_way']:.0%}, mean change {v['mean_change']:+.3f}, clean {v['clean_share']:.0%}"
            + ("" if r["eligible"] else " (no setting was coherent on 80% of the calibration prompts)"))


class CalibrationOps:
    """``calibrate``: the search on the session's model, its choice stored through the session's lock."""

    def __init__(self, session: ModelSession) -> None:
        self.session = session

    def calibrate(self, req: CalibrateRequest, echo: Echo, token: Optional[CancelToken] = None) -> Optional[dict]:
        """The report (slug -> chosen setting and its validation); None on a rank that does not report."""
        lm = self.session.loaded
        everyone, targets = self._targets(req)
        plan = search_plan(req)
        runner, main, rank = _runner(req.distributed)
        t0 = time.perf_counter()
        log = _progress_log(echo, req.log if main else None, rank, t0)

        def job(tok: CancelToken) -> tuple[dict, dict, dict, dict]:
            judges, labels = self._judges(targets, everyone)
            if req.reuse_vectors:
                variants, consistency = self._stored(targets), {}
            else:
                variants, consistency = build_variants(lm, _context(targets, everyone), plan.methods, log,
                                                       targets=[c.slug for c in targets])
            log("vectors ready")
            report = run_search(lm, variants, judges, load_prompts("calibration"), load_prompts("validation"), plan,
                                log, should_stop=tok, runner=runner)
            return report, variants, consistency, labels

        report, variants, consistency, labels = self.session.jobs.run(job, token)
        seconds = round(time.perf_counter() - t0, 1)
        log(f"done in {seconds} s")
        if not main:
            return None  # another rank of a distributed job: rank 0 reports and saves
        if req.log:  # keep the raw result even if storing fails below
            _keep_raw(req.log, report, variants)
        for c in targets:
            if c.slug not in report:  # --reuse-vectors: the depth scan needs a mean_diff vector
                echo(f"{c.slug}: skipped: --reuse-vectors calibrates stored mean_diff vectors and its stored vectors "
                     f"are {', '.join(variants[c.slug])}; calibrate it without --reuse-vectors")
                continue
            r = report[c.slug]
            r["judge"] = labels[c.slug]
            r["pair_consistency"] = consistency.get(c.slug, {}).get(str(r["layer"]))
            echo(summary_line(c.slug, r))
            self._store(req, c, r, variants[c.slug][r["method"]])
        if req.ship:
            with self.session.jobs.lock:
                write_report(self._report_path(), report, plan, seconds, lm.model_id)
        return report

    def _report_path(self) -> Path:
        from app.library.slugs import model_key

        return paths.REPO_DIR / CALIBRATION_DIR / f"{model_key(self.session.loaded.model_id)}.json"

    def _targets(self, req: CalibrateRequest) -> tuple[list[Concept], list[Concept]]:
        """(every concept with pairs, the requested ones), checked before any model work."""
        lib = self.session.library
        everyone = [lib.get(s.slug) for s in lib.list() if s.n_pairs >= 2]
        wanted = [c.slug for c in everyone] if req.concepts == ("all",) else list(req.concepts)
        targets = [lib.get(s) for s in wanted]
        for c in targets:
            if len(c.pairs) < 2:
                raise InputError(f"{c.slug}: has no contrast pairs to calibrate (a mix or an import)")
            if req.ship and not lib.is_shipped(c.slug):
                raise InputError(f"{c.slug} is not a shipped concept")
        return everyone, targets

    def _judges(self, targets: list[Concept], everyone: list[Concept]) -> tuple[dict, dict]:
        out, labels = {}, {}
        for c in targets:
            spec = default_spec(c)
            if spec is None:
                raise InputError(f"{c.slug}: no judge (declare `judge:` in its YAML or give it at least 4 pairs "
                                 "for a probe)")
            judge = build_judge(spec, lm=self.session.loaded, concept=c, library_concepts=everyone)
            out[c.slug] = lambda texts, j=judge: judge_scores(j, texts)
            labels[c.slug] = judge.label
        return out, labels

    def _stored(self, targets: list[Concept]) -> dict[str, dict[str, ConceptVectors]]:
        """slug -> {its stored method: its stored vectors} (an error when a concept has none)."""
        out = {}
        for c in targets:
            cv = self.session.library.load_vectors(c.slug, *self.session.model_key_args())
            if cv is None:
                raise InputError(f"{c.slug}: no stored vectors for {self.session.loaded.model_id} to reuse; "
                                 "drop --reuse-vectors")
            out[c.slug] = {cv.method: cv}
        return out

    def _store(self, req: CalibrateRequest, concept: Concept, r: dict, cv: ConceptVectors) -> None:
        """The chosen method and setting into the concept (and its vectors), under the model lock."""
        from app.library.slugs import model_key

        model_id = self.session.loaded.model_id
        rec = Recommendation(layer=int(r["layer"]), strength=float(r["strength"]), strength_mode="relative",
                             source="calibration", band=tuple(int(l) for l in r.get("band", ())))
        updated = dataclasses.replace(concept, method=r["method"],
                                      recommended={**concept.recommended, model_key(model_id): rec})
        lib = self.session.library
        with self.session.jobs.lock:
            if req.ship:
                lib.ship(updated, model_id, cv)
            elif req.save:
                lib.save(updated, overwrite=True)
                lib.save_vectors(concept.slug, model_id, cv)


def _context(targets: list[Concept], everyone: list[Concept]) -> list[Concept]:
    """The targets and the concepts that feed their methods (opposites for bipolar, category mates for no_shared)."""
    context = {c.slug: c for c in targets}
    for c in targets:
        for o in everyone:
            if o.slug == c.opposite or o.category == c.category:
                context.setdefault(o.slug, o)
    return list(context.values())


def _progress_log(echo: Echo, path: Optional[str], rank: str, t0: float) -> Callable[[str], None]:
    """Lines stamped with the seconds since ``t0`` to ``echo`` and (the reporting rank only) appended to ``path``."""

    def log(msg: str) -> None:
        line = f"[{time.perf_counter() - t0:7.1f} s]{rank} {msg}"
        echo(line)
        if path:
            with open(path, "a", encoding="utf-8") as f:
                f.write(line + "\n")

    return log


def _keep_raw(log: str, report: dict, variants: dict) -> None:
    from app.library.atomic import atomic_write_text
    from app.library.vectors import save_vectors

    atomic_write_text(log + ".json", json.dumps(report, ensure_ascii=False))
    for slug, r in report.items():
        save_vectors(f"{log}.{slug}.safetensors", variants[slug][r["method"]])


def write_report(path: Path, report: dict, plan: SearchPlan, seconds: float, model_id: str) -> None:
    """Merge ``report`` into the model's calibration file (other concepts' entries are kept)."""
    from app.library.atomic import atomic_write_text

    old = {}
    if path.is_file():
        try:
            old = json.loads(path.read_text(encoding="utf-8")).get("concepts", {})
        except (ValueError, AttributeError):
            old = {}
    data = {
        "model": model_id,
        "date": datetime.date.today().isoformat(),
        "seconds": seconds,
        "plan": dataclasses.asdict(plan),
        "concepts": {**old, **report},
    }
    atomic_write_text(path, json.dumps(data, indent=1, ensure_ascii=False) + "\n")
