"""`steering-lab concepts list`, `extract`, `export-gguf`, `import-gguf`: concepts from a shell."""

from __future__ import annotations

import math
import sys
import time

from app.errors import CLIError


def register(sub, add) -> None:
    sp = add("concepts", "list the concepts in the library", cmd_concepts, model=False)
    sp.add_argument("action", choices=["list"], help="what to do (list)")
    sp.add_argument("--category", default=None, help="only this category (emotion, style, persona, mix, ...)")
    sp.add_argument("--tag", default=None, help="only concepts with this tag")

    sp = add("extract", "extract a concept's vectors for every layer and show their quality", cmd_extract)
    sp.add_argument("slug", help="concept slug (see `concepts list`)")
    from app.service.lab import extraction_method_names  # the extraction-method registry

    sp.add_argument("--method", choices=extraction_method_names(), default=None,
                    help="extraction method (default: the concept's own `method:`, else mean_diff)")

    sp = add("export-gguf", "write a concept as a llama.cpp control vector (.gguf)", cmd_export_gguf, json_flag=False)
    sp.add_argument("slug")
    sp.add_argument("--out", required=True, help="output file, e.g. happy.gguf")
    sp.add_argument("--layers", default=None, help="layer range A-B or one layer N (default: all layers except 0)")
    sp.add_argument("--strength", type=float, default=None,
                    help="bake this strength in (default: write the raw vectors and scale them in llama.cpp)")
    sp.add_argument("--absolute", action="store_true",
                    help="--strength multiplies the raw vector instead of the layer's typical norm")
    sp.add_argument("--op", default="add", help="only add can be exported; any other operation is refused with the reason")

    sp = add("import-gguf", "import a llama.cpp control vector (.gguf) as a concept", cmd_import_gguf, json_flag=False)
    sp.add_argument("file")
    sp.add_argument("--slug", required=True, help="slug of the new concept")
    sp.add_argument("--name", default=None, help="display name (default: from the file name)")
    sp.add_argument("--overwrite", action="store_true", help="replace an existing concept with this slug")


def parse_layer_range(text: str, num_layers: int) -> list[int]:
    """``"8-12"`` -> [8..12], ``"10"`` -> [10]; CLIError for anything else or out of range."""
    raw = (text or "").strip()
    try:
        if "-" in raw:
            a, b = (int(x) for x in raw.split("-", 1))
        else:
            a = b = int(raw)
    except ValueError:
        raise CLIError(f"--layers must look like A-B (e.g. 8-12) or one layer N, got {text!r}") from None
    if a > b:
        raise CLIError(f"--layers {text}: the start is after the end")
    if a < 0 or b >= num_layers:
        raise CLIError(f"--layers {text}: this model has layers 0-{num_layers - 1}")
    return list(range(a, b + 1))


def cmd_concepts(args) -> int:
    from app.cli import _print_json
    from app.service.lab import Lab

    rows = [
        {"slug": s.slug, "name": s.name, "category": s.category, "pairs": s.n_pairs, "tags": list(s.tags),
         "shipped": s.shipped}
        for s in Lab().concepts.list(category=args.category, tag=args.tag)
    ]
    if args.json:
        _print_json(rows)
        return 0
    if not rows:
        print("no concepts match", file=sys.stderr)
    for r in rows:
        print(f"{r['slug']:<22} {r['category']:<10} {r['pairs']:>4} pairs  {r['name']}  [{', '.join(r['tags'])}]")
    return 0


def _progress_printer():
    start = time.perf_counter()

    def report(done: int, total: int) -> None:
        print(f"\rextracting: {done}/{total} prompts ({time.perf_counter() - start:.1f} s)", end="",
              file=sys.stderr, flush=True)
        if done >= total:
            print(file=sys.stderr, flush=True)

    return report


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def cmd_extract(args) -> int:
    from app.cli import _lab, _print_json
    from app.domain.requests import ExtractRequest

    svc = _lab(args)
    cv = svc.extract(ExtractRequest(args.slug, method=args.method), progress=_progress_printer())
    lo, hi = cv.recommended_layers
    if args.json:
        _print_json({
            "slug": args.slug, "model_id": cv.model_id, "method": cv.method,
            "recommended_layers": [lo, hi], "extra": cv.extra,
            "layers": [
                {"layer": q.layer, "vector_norm": q.vector_norm, "typical_norm": q.typical_norm,
                 "relative_norm": q.relative_norm, "d_prime": _finite(q.d_prime), "loo_accuracy": q.loo_accuracy,
                 "pc1_share": q.pc1_share, "cosine_to_others": q.cosine_to_others}
                for q in cv.quality
            ],
        })
        return 0
    print(f"{args.slug} on {cv.model_id} ({cv.method}, {cv.extra.get('n_pairs')} pairs, "
          f"{cv.extra.get('seconds')} s)")
    print(f"{'layer':>5} {'norm':>9} {'typical':>9} {'rel':>6} {'d_prime':>8} {'loo':>5} {'pc1':>5}")
    for q in cv.quality:
        mark = "  <" if lo <= q.layer <= hi else ""
        print(f"{q.layer:>5} {q.vector_norm:>9.2f} {q.typical_norm:>9.2f} {q.relative_norm:>6.3f} "
              f"{q.d_prime:>8.2f} {q.loo_accuracy:>5.2f} {q.pc1_share:>5.2f}{mark}")
    print(f"recommended layers: {lo}-{hi}")
    return 0


def cmd_export_gguf(args) -> int:
    from app.cli import _lab
    from app.service.lab import check_exportable

    check_exportable(args.op)  # before loading the model: the refusal is instant
    svc = _lab(args)
    layers = parse_layer_range(args.layers, svc.num_layers()) if args.layers else None
    if args.strength is not None and not math.isfinite(args.strength):
        raise CLIError("--strength must be a finite number")
    res = svc.concepts.export_gguf(args.slug, args.out, layers=layers, strength=args.strength, relative=not args.absolute,
                          op=args.op)
    what = "raw vectors" if res.strength is None else \
        f"strength {res.strength:g} ({'relative' if res.relative else 'absolute'}) baked in"
    span = f"{res.layers[0]}-{res.layers[-1]}" if len(res.layers) > 1 else str(res.layers[0])
    print(f"wrote {res.path}: direction.N for layers {span}, {what}")
    for note in res.notes:
        print(f"note: {note}", file=sys.stderr)
    return 0


def cmd_import_gguf(args) -> int:
    from app.cli import _lab

    svc = _lab(args)
    slug = svc.concepts.import_gguf(args.file, args.slug, name=args.name, overwrite=args.overwrite)
    cv = svc.concepts.vectors(slug)
    present = cv.extra.get("present_layers", [])
    print(f"imported {args.file} as {slug!r} ({len(present)} layer(s): {present})")
    return 0
