"""`steering-lab calibrate`: find and store recommended settings (sweeps over several prompts)."""

from __future__ import annotations

import sys

from app.errors import CLIError


def register(sub, add) -> None:
    sp = add("calibrate", "find a concept's recommended layer and strength for the loaded model", cmd_calibrate)
    sp.add_argument("concepts", nargs="+", help="concept slugs, or 'all' for every concept in the library")
    sp.add_argument("--max-tokens", type=int, default=32)
    sp.add_argument("--layers", default=None, help="layers to try (default: 5 layers over the middle of the network)")
    sp.add_argument("--strengths", default=None, help="relative strengths to try (default 0.15,0.25,0.35,0.5)")
    sp.add_argument("--save", action="store_true", help="store the recommendation in your concept library")
    sp.add_argument("--ship", action="store_true", help="(maintainers) write vectors to assets/vectors and settings to concepts/*.yaml")
    sp.add_argument("--distributed", action="store_true",
                    help="split the (concept, prompt) sweeps over the ranks of an mlx.launch job; rank 0 reports "
                         "and saves (run: mlx.launch --backend ring -n 2 --python .venv/bin/python -m app calibrate ...)")


def cmd_calibrate(args) -> int:
    from app import paths
    from app.cli import _print_json, _service
    from app.core.calibrate import DEFAULT_STRENGTHS
    from app.core.extraction import extract
    from app.library.atomic import atomic_write_text
    from app.library.schema import concept_to_yaml
    from app.library.slugs import model_key
    from app.library.vectors import save_vectors
    from app.service.generation_ops import parse_float_list, parse_int_list
    from app.types import Recommendation

    svc = _service(args)
    lm = svc.loaded
    lib = svc.library
    slugs = [s.slug for s in lib.list()] if args.concepts == ["all"] else args.concepts
    layers = parse_int_list(args.layers, "layers", lm.num_layers) if args.layers else None
    strengths = parse_float_list(args.strengths) if args.strengths else list(DEFAULT_STRENGTHS)
    key = model_key(lm.model_id)
    report = {}
    vectors = {}
    for slug in slugs:
        concept = lib.get(slug)
        if not concept.pairs:
            print(f"{slug}: skipped (no pairs: a mix or an import)", file=sys.stderr)
            continue
        print(f"{slug}: extracting ...", file=sys.stderr, flush=True)
        vectors[slug] = extract(lm, concept)
    cals, main = _calibrations(args, lm, vectors, layers, strengths)
    if not main:
        return 0  # another rank of a distributed job: rank 0 reports and saves
    for slug, cal in cals.items():
        concept, cv = lib.get(slug), vectors[slug]
        report[slug] = {**cal.as_dict(), "recommended_layers_from_quality": list(cv.recommended_layers)}
        if cal.recommended is None:
            print(f"{slug}: no coherent setting raised the concept score", file=sys.stderr)
            continue
        rec = Recommendation(layer=cal.recommended[0], strength=cal.recommended[1], strength_mode="relative", source="sweep")
        if args.ship:
            if not lib.is_shipped(slug):
                raise CLIError(f"{slug} is not a shipped concept")
            concept.recommended[key] = rec
            atomic_write_text(paths.SHIPPED_CONCEPTS / f"{slug}.yaml", concept_to_yaml(concept))
            save_vectors(paths.SHIPPED_VECTORS / key / f"{slug}.safetensors", cv)
        elif args.save:
            lib.save_vectors(slug, lm.model_id, cv)
            lib.set_recommendation(slug, lm.model_id, rec)
        print(f"{slug}: recommended layer {rec.layer}, strength {rec.strength:g}", file=sys.stderr)
    if args.json:
        _print_json(report)
    return 0


def _calibrations(args, lm, vectors, layers, strengths):
    """({slug: Calibration}, is this the reporting rank): concept by concept, or distributed."""
    if args.distributed:
        from app.core import distributed
        from app.core.distributed_calibrate import calibrate_many

        grp = distributed.group()
        print(f"rank {grp.rank()} of {grp.size()}: {len(vectors)} concepts", file=sys.stderr, flush=True)

        def progress(done, total):
            print(f"\rrank {grp.rank()}: sweep {done}/{total}   ", end="", file=sys.stderr, flush=True)

        cals = calibrate_many(lm, vectors, layers=layers, strengths=strengths, max_tokens=args.max_tokens,
                              grp=grp, progress=progress)
        print(file=sys.stderr)
        return cals, distributed.is_main(grp)
    from app.core.calibrate import calibrate

    cals = {}
    for slug, cv in vectors.items():
        def progress(done, total, msg, slug=slug):
            print(f"\r{slug}: {msg} step {done}/{total}   ", end="", file=sys.stderr, flush=True)

        cals[slug] = calibrate(lm, cv, layers=layers, strengths=strengths, max_tokens=args.max_tokens, progress=progress)
        print(file=sys.stderr)
    return cals, True
