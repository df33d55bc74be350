"""`steering-lab calibrate`: choose method, layer and strength on calibration prompts, report on validation.

See app.core.calibrate for the selection rule and the coarse-to-fine search. ``--ship``
(maintainers) writes the chosen vectors to assets/vectors, ``method:`` and ``recommended:``
to concepts/*.yaml (through the library) and the full report to assets/calibration/<model>.json.
"""

from __future__ import annotations

import json
import sys
import time

from app.errors import CLIError

CALIBRATION_DIR = "assets/calibration"


def register(sub, add) -> None:
    sp = add("calibrate", "choose a concept's extraction method, layer and strength for the loaded model", cmd_calibrate)
    sp.add_argument("concepts", nargs="+", help="concept slugs, or 'all' for every concept with pairs")
    sp.add_argument("--methods", default=None, help="extraction methods to compare (default: mean_diff,bipolar,"
                    "no_shared,system_prompt,unit_mean; the ones a concept cannot use are skipped)")
    sp.add_argument("--layers", default=None, help="layers of the depth scan (default: every 4th layer from 2)")
    sp.add_argument("--strengths", default=None,
                    help="relative strengths of the fine stage (default 0.1,0.15,0.2,0.3,0.45,0.6)")
    sp.add_argument("--coarse-strengths", default=None,
                    help="relative strengths of the depth and method stages (default 0.2,0.35)")
    sp.add_argument("--coarse-prompts", type=int, default=2, help="calibration prompts of the depth and method stages")
    sp.add_argument("--coarse-tokens", type=int, default=32, help="tokens per answer in the depth and method stages")
    sp.add_argument("--top-layers", type=int, default=1, help="layers carried from the depth scan to the later stages")
    sp.add_argument("--validate-all-methods", action="store_true",
                    help="validate every method at its own best setting (default: the chosen one and mean_diff)")
    sp.add_argument("--max-tokens", type=int, default=48, help="tokens per calibration answer")
    sp.add_argument("--val-tokens", type=int, default=64, help="tokens per validation answer")
    sp.add_argument("--save", action="store_true", help="store the result in your concept library")
    sp.add_argument("--ship", action="store_true", help="(maintainers) write vectors, settings and the report to the repo")
    sp.add_argument("--log", default=None, help="also append progress lines to this file")
    sp.add_argument("--reuse-vectors", action="store_true",
                    help="calibrate the stored vectors as they are (no extraction, no method comparison)")
    sp.add_argument("--distributed", action="store_true",
                    help="spread each stage's prompts over the ranks of an mlx.launch job; rank 0 logs, prints and "
                         "saves (mlx.launch --backend ring -n 2 --python .venv/bin/python .venv/bin/steering-lab "
                         "calibrate ... --distributed)")


def _plan(args, lm):
    from app.core.calib_search import COMPARED_METHODS, SearchPlan
    from app.core.methods import get_method
    from app.domain.parse import parse_floats, parse_layers

    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip()) if args.methods else COMPARED_METHODS
    for m in methods:
        get_method(m)
    if "mean_diff" not in methods:
        raise CLIError("--methods must include mean_diff (the depth scan uses it)")
    kw = {}
    if args.layers:
        kw["coarse_layers"] = tuple(parse_layers(args.layers, lm.num_layers, "layers"))
    if args.strengths:
        kw["fine_strengths"] = tuple(parse_floats(args.strengths, "strengths"))
    if args.coarse_strengths:
        kw["coarse_strengths"] = kw["method_strengths"] = tuple(parse_floats(args.coarse_strengths, "coarse-strengths"))
    for name in ("coarse_prompts", "coarse_tokens", "top_layers", "max_tokens", "val_tokens"):
        if getattr(args, name) < 1:
            raise CLIError(f"--{name.replace('_', '-')} must be at least 1")
    return SearchPlan(coarse_prompts=args.coarse_prompts, coarse_tokens=args.coarse_tokens, top_layers=args.top_layers,
                      cal_tokens=args.max_tokens, val_tokens=args.val_tokens, methods=methods,
                      validate_all_methods=args.validate_all_methods, **kw)


def _judges(lm, concepts, everyone):
    from app.core.judges import build_judge, default_spec, judge_scores

    out, labels = {}, {}
    for c in concepts:
        spec = default_spec(c)
        if spec is None:
            raise CLIError(f"{c.slug}: no judge (declare `judge:` in its YAML or give it at least 4 pairs for a probe)")
        judge = build_judge(spec, lm=lm, concept=c, library_concepts=everyone)
        out[c.slug] = lambda texts, j=judge: judge_scores(j, texts)
        labels[c.slug] = judge.label
    return out, labels


def cmd_calibrate(args) -> int:
    from app import paths
    from app.cli import _print_json, _service
    from app.core.calib_search import build_variants, run_search
    from app.core.calibrate import load_prompts
    from app.library.slugs import model_key

    svc = _service(args)
    lm, lib = svc.loaded, svc.library
    everyone = [lib.get(s.slug) for s in lib.list() if s.n_pairs >= 2]
    wanted = [c.slug for c in everyone] if args.concepts == ["all"] else args.concepts
    targets = [lib.get(s) for s in wanted]
    for c in targets:
        if len(c.pairs) < 2:
            raise CLIError(f"{c.slug}: has no contrast pairs to calibrate (a mix or an import)")
    if args.ship:
        for c in targets:
            if not lib.is_shipped(c.slug):
                raise CLIError(f"{c.slug} is not a shipped concept")
    plan = _plan(args, lm)
    runner, main, rank = _runner(args)
    logf = open(args.log, "a", encoding="utf-8") if args.log and main else None
    t0 = time.perf_counter()

    def log(msg: str) -> None:
        line = f"[{time.perf_counter() - t0:7.1f} s]{rank} {msg}"
        print(line, file=sys.stderr, flush=True)
        if logf:
            logf.write(line + "\n")
            logf.flush()

    judges, labels = _judges(lm, targets, everyone)
    context = {c.slug: c for c in targets}
    for c in targets:  # opposites and category mates feed bipolar / no_shared
        for o in everyone:
            if o.slug == c.opposite or o.category == c.category:
                context.setdefault(o.slug, o)
    if args.reuse_vectors:
        variants, consistency = _stored(svc, targets), {}
    else:
        variants, consistency = build_variants(lm, list(context.values()), plan.methods, log,
                                               targets=[c.slug for c in targets])
    log("vectors ready")
    report = run_search(lm, variants, judges, load_prompts("calibration"), load_prompts("validation"), plan, log,
                        runner=runner)
    seconds = round(time.perf_counter() - t0, 1)
    log(f"done in {seconds} s")
    if not main:
        return 0  # another rank of a distributed job: rank 0 reports and saves
    if args.log:  # keep the raw result even if storing fails below
        from app.library.atomic import atomic_write_text

        from app.library.vectors import save_vectors

        atomic_write_text(args.log + ".json", json.dumps(report, ensure_ascii=False))
        for slug, r in report.items():
            save_vectors(f"{args.log}.{slug}.safetensors", variants[slug][r["method"]])
    key = model_key(lm.model_id)
    for c in targets:
        r = report[c.slug]
        r["judge"] = labels[c.slug]
        r["pair_consistency"] = consistency.get(c.slug, {}).get(str(r["layer"]))
        _store(args, lib, lm, c, r, variants[c.slug][r["method"]], key)
    if args.ship:
        _write_report(paths.REPO_DIR / CALIBRATION_DIR / f"{key}.json", report, plan, seconds, lm.model_id)
    if args.json:
        _print_json(report)
    return 0


def _stored(svc, targets) -> dict:
    """slug -> {its stored method: its stored vectors} (CLIError when a concept has none)."""
    lm, out = svc.loaded, {}
    info = lm.info()
    for c in targets:
        cv = svc.library.load_vectors(c.slug, lm.model_id, info.fingerprint, lm.hidden_size, lm.num_layers)
        if cv is None:
            raise CLIError(f"{c.slug}: no stored vectors for {lm.model_id} to reuse; drop --reuse-vectors")
        out[c.slug] = {"mean_diff" if cv.method == "mean_diff" else cv.method: cv}
    return out
def _runner(args):
    """(runner for calibrate.evaluate, is this the reporting rank, log prefix)."""
    if not args.distributed:
        return None, True, ""
    import functools

    from app.core import distributed

    grp = distributed.group()
    return functools.partial(distributed.run_json_items, grp=grp), distributed.is_main(grp), \
        f" rank {grp.rank()} of {grp.size()}:"


def _store(args, lib, lm, concept, r, cv, key) -> None:
    import dataclasses

    from app.types import Recommendation

    rec = Recommendation(layer=int(r["layer"]), strength=float(r["strength"]), strength_mode="relative",
                         source="calibration")
    v = r["validation"]
    print(f"{concept.slug}: {r['method']} layer {rec.layer} strength {rec.strength:g}; validation right way "
          f"{v['right_way']:.0%}, mean change {v['mean_change']:+.3f}, clean {v['clean_share']:.0%}"
          + ("" if r["eligible"] else " (no setting was coherent on 80% of the calibration prompts)"), file=sys.stderr)
    updated = dataclasses.replace(concept, method=r["method"], recommended={**concept.recommended, key: rec})
    if args.ship:
        lib.ship(updated, lm.model_id, cv)
    elif args.save:
        lib.save(updated, overwrite=True)
        lib.save_vectors(concept.slug, lm.model_id, cv)


def _write_report(path, report, plan, seconds, model_id) -> None:
    import dataclasses
    import datetime

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
