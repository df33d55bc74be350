"""Efficacy of the shipped concepts on the default model: do they steer the way their names say?

For every shipped concept at its shipped setting (concepts/*.yaml ``method:`` and
``recommended:``, vectors from assets/vectors), on the validation prompts
(assets/prompts/validation.txt, never used to choose anything), greedy, 64 tokens:
- right way: share of prompts where the concept's judge moved the right way (steered - unsteered);
- success: right way AND clean (distinct-2 >= 0.5, no loop) - the target is >= 80% for 14 of 16
  concepts, and every prompt for happy and sad;
- prompted: the unsteered model with the concept's positive system prompt, same judge.
Usage: python benchmarks/efficacy.py [--json] [--markdown] [--concepts sad,happy]
    [--model gemma-3-270m --settings benchmarks/results/calibration-....json] [--repetition-penalty 1.15]
``--settings`` takes each concept's (method, layer, strength, band) from a calibration result JSON
(``calibrate ... --json``) instead of the shipped files, extracting the vectors on demand (nothing is saved);
``--repetition-penalty`` generates every row (baseline, steered, prompted) with it.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import app.core  # noqa: E402,F401  (fast BLAS first)

from app.core.calibrate import load_prompts  # noqa: E402
from app.core.efficacy import measure, prompted_generations  # noqa: E402
from app.core.judges import build_judge, default_spec, judge_scores  # noqa: E402
from app.library.slugs import model_key  # noqa: E402
from app.service.model_service import ModelService  # noqa: E402
from app.types import layers_label  # noqa: E402


def shipped_setup(svc, slugs=None, settings_file=None):
    """Concepts, their shipped vectors and settings (or those of a calibration result), and judges for the loaded model."""
    lib, lm = svc.library, svc.loaded
    info, key = lm.info(), model_key(lm.model_id)
    everyone = [lib.get(s.slug) for s in lib.list() if s.n_pairs >= 2]
    concepts = [c for c in everyone if lib.is_shipped(c.slug) and (not slugs or c.slug in slugs)]
    chosen = json.loads(Path(settings_file).read_text(encoding="utf-8"))["concepts"] if settings_file else None
    vectors, settings, scorers, labels = {}, {}, {}, {}
    for c in concepts:
        if chosen is not None:
            ch = chosen[c.slug]
            cv = svc.extract_concept(c.slug, ch["method"], save=False)
            vectors[c.slug], settings[c.slug] = cv, (ch["layer"], ch["strength"], tuple(ch.get("band") or ()))
        else:
            cv = lib.load_vectors(c.slug, lm.model_id, info.fingerprint, lm.hidden_size, lm.num_layers)
            rec = c.recommended.get(key)
            if cv is None or rec is None:
                raise SystemExit(f"{c.slug}: no shipped vectors or recommended setting for {key}")
            vectors[c.slug], settings[c.slug] = cv, (rec.layer, rec.strength, rec.band)
        judge = build_judge(default_spec(c), lm=lm, concept=c, library_concepts=everyone)
        scorers[c.slug] = lambda texts, j=judge: judge_scores(j, texts)
        labels[c.slug] = judge.label
    return concepts, vectors, settings, scorers, labels


def baseline_generations(lm, prompts, tokens, repetition_penalty=1.0):
    """Unsteered answers to ``prompts`` (one left-padded batch)."""
    from app.core.cellbatch import generate_plain
    from app.core.chat import encode, eos_ids, format_chat

    eos = eos_ids(lm.tokenizer)
    toks = [encode(lm.tokenizer, format_chat(lm.tokenizer, p)) for p in prompts]
    return [lm.tokenizer.decode([t for t in row if t not in eos]) for row, _ in generate_plain(lm, toks, tokens, repetition_penalty)]


def from_report(svc, concepts, scorers, cached):
    """ConceptEfficacy rows rebuilt from the stored calibration report's validation results."""
    from app.core.efficacy import ConceptEfficacy
    from app.library.calibration import load_calibration

    report = load_calibration(model_key(svc.loaded.model_id))
    base = cached.get("__baseline__")
    out = {}
    for c in concepts:
        v = report[c.slug]["validation"]
        clean = v.get("clean") or [_clean(svc.loaded.tokenizer, t) for t in v["texts"]]
        e = ConceptEfficacy(c.slug, v["method"], v["layer"], v["strength"], list(v["changes"]),
                            [bool(x) for x in clean], texts=list(v.get("texts", [])), band=tuple(v.get("band", ())))
        if base and c.slug in cached:
            e.prompted_changes = [float(s[1] - s[0]) for s in (scorers[c.slug]([b, t]) for b, t in zip(base, cached[c.slug]))]
        out[c.slug] = e
    return out


def _clean(tokenizer, text):
    """distinct-2 >= 0.5 and no loop, from the stored text re-tokenized (older reports kept no flags)."""
    from app.core.scoring import detect_loop, distinct_n

    toks = list(tokenizer.encode(text, add_special_tokens=False))
    return bool(toks) and distinct_n(toks, 2) >= 0.5 and detect_loop(toks) is None


def _read_cache(path, prompts, tokens, penalty=1.0):
    if not path or not Path(path).is_file():
        return None
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    same = (data.get("prompts") == list(prompts) and data.get("tokens") == tokens
            and data.get("repetition_penalty", 1.0) == penalty)
    return data["texts"] if same else None


def _layers(r) -> str:
    return layers_label(r["layer"], r.get("band", ()))


def markdown(rows) -> str:
    head = ("| concept | method | layer | strength | right way | success (right way + clean) | mean judge change "
            "| clean | prompted right way | prompted mean change |\n|---|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    for r in rows:
        n = r["n_prompts"]
        pr = "n/a" if r["prompted_right_way"] is None else f"{round(r['prompted_right_way'] * n)}/{n}"
        pm = "n/a" if r["prompted_mean_change"] is None else f"{r['prompted_mean_change']:+.3f}"
        lines.append(f"| {r['concept']} | {r['method']} | {_layers(r)} | {r['strength']:g} | "
                     f"{round(r['right_way'] * n)}/{n} | {round(r['success'] * n)}/{n} | {r['mean_change']:+.3f} | "
                     f"{r['clean_share']:.0%} | {pr} | {pm} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--concepts", default="", help="comma-separated slugs (default: every shipped concept)")
    ap.add_argument("--no-prompted", action="store_true", help="skip the prompted rows")
    ap.add_argument("--prompted-cache", default=None,
                    help="JSON file of prompted answers: read when it exists (for these prompts and tokens), else written")
    ap.add_argument("--prompted-only", action="store_true",
                    help="only generate the prompted and unsteered answers (for the cache)")
    ap.add_argument("--stored", action="store_true",
                    help="no steered generation: read the validation results `calibrate --ship` stored in "
                         "assets/calibration/<model>.json (same prompts, judges, 64 greedy tokens)")
    ap.add_argument("--model", default="", help="the model to load (default: the lab's default model)")
    ap.add_argument("--settings", default=None, help="a calibration result JSON to take the settings from (see above)")
    ap.add_argument("--repetition-penalty", type=float, default=1.0, help="every row's repetition penalty (1 = off)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--markdown", action="store_true", help="print the README table")
    args = ap.parse_args()
    svc = ModelService()
    svc.load(args.model)
    slugs = [s.strip() for s in args.concepts.split(",") if s.strip()]
    concepts, vectors, settings, scorers, labels = shipped_setup(svc, slugs, args.settings)
    penalty = args.repetition_penalty
    prompts = load_prompts("validation")
    t0 = time.perf_counter()
    log = lambda m: print(f"[{time.perf_counter() - t0:6.0f} s] {m}", file=sys.stderr, flush=True)  # noqa: E731
    if args.stored and (penalty != 1.0 or args.settings):
        raise SystemExit("--stored reads what the calibration generated: it takes neither --settings nor --repetition-penalty")
    cached = _read_cache(args.prompted_cache, prompts, args.tokens, penalty)
    if args.prompted_only or (args.prompted_cache and cached is None and not args.no_prompted):
        cached = prompted_generations(svc.loaded, [c for c in concepts if c.system_prompts], prompts, args.tokens, log,
                                      penalty)
        cached["__baseline__"] = baseline_generations(svc.loaded, prompts, args.tokens, penalty)
        if args.prompted_cache:
            Path(args.prompted_cache).write_text(json.dumps({"prompts": prompts, "tokens": args.tokens, "texts": cached,
                                                             "repetition_penalty": penalty},
                                                            ensure_ascii=False), encoding="utf-8")
        if args.prompted_only:
            return 0
    if args.stored:
        res = from_report(svc, concepts, scorers, cached or {})
    else:
        res = measure(svc.loaded, concepts, vectors, settings, scorers, prompts, args.tokens, not args.no_prompted,
                      log=log, prompted_texts=cached, repetition_penalty=penalty)
    rows = [{**res[c.slug].row(), "judge": labels[c.slug]} for c in concepts]
    met = [r["concept"] for r in rows if r["success"] >= 0.8 - 1e-9]
    summary = {
        "date": datetime.date.today().isoformat(), "model": svc.loaded.model_id, "prompts": len(prompts),
        "tokens": args.tokens, "repetition_penalty": penalty, "settings": args.settings or "shipped",
        "seconds": round(time.perf_counter() - t0, 1),
        "concepts_meeting_target": f"{len(met)}/{len(rows)}", "meeting_target": met,
        "happy_sad_every_prompt": {s: res[s].success == 1.0 for s in ("happy", "sad") if s in res},
    }
    if args.json:
        print(json.dumps({"summary": summary, "rows": rows,
                          "texts": {s: e.texts for s, e in res.items()}}, indent=1, ensure_ascii=False))
    else:
        print(markdown(rows) if args.markdown else json.dumps(rows, indent=1))
        print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
