"""`steering-lab calibrate`: choose method, layer and strength on calibration prompts, report on validation.

The search runs in the lab (``Lab.calibrate``, app.service.calibration_ops); this module only turns
argv into a ``CalibrateRequest`` and prints. ``--ship`` (maintainers) writes the chosen vectors to
assets/vectors, ``method:`` and ``recommended:`` to concepts/*.yaml and the full report to
assets/calibration/<model>.json, all through the lab under its model lock.
"""

from __future__ import annotations

import sys

from app.domain.methods import COMPARED_METHODS
from app.domain.parse import parse_floats, parse_layers
from app.domain.requests import CalibrateRequest


def register(sub, add) -> None:
    sp = add("calibrate", "choose a concept's extraction method, layer and strength for the loaded model", cmd_calibrate)
    sp.add_argument("concepts", nargs="+", help="concept slugs, or 'all' for every concept with pairs")
    sp.add_argument("--methods", default=None, help=f"extraction methods to compare (default: {','.join(COMPARED_METHODS)}; "
                    "the ones a concept cannot use are skipped)")
    sp.add_argument("--layers", default=None, help="layers of the depth scan (default: every 4th layer from 2)")
    sp.add_argument("--strengths", default=None,
                    help="relative strengths of the fine stage (default 0.1,0.15,0.2,0.3,0.45,0.6)")
    sp.add_argument("--coarse-strengths", default=None,
                    help="relative strengths of the depth and method stages (default 0.2,0.35)")
    sp.add_argument("--band-strengths", default=None,
                    help="fine stage: relative strengths tried on a band of layers around each layer "
                         "(the layer and 2 and 4 layers either side; default 0.05,0.08; 'none' for single layers only)")
    sp.add_argument("--coarse-prompts", type=int, default=2, help="calibration prompts of the depth and method stages")
    sp.add_argument("--coarse-tokens", type=int, default=32, help="tokens per answer in the depth and method stages")
    sp.add_argument("--top-layers", type=int, default=1, help="layers carried from the depth scan to the later stages")
    sp.add_argument("--repetition-penalty", type=float, default=1.0,
                    help="generate every row (baselines too) with this repetition penalty (1 = off; e.g. 1.15 for a base model)")
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


def _band_strengths(text):
    """None (the default), () for 'none', else the listed strengths."""
    if not text:
        return None
    return () if text.strip().lower() == "none" else tuple(parse_floats(text, "band-strengths"))


def calibrate_request(args, num_layers: int) -> CalibrateRequest:
    """argv as the lab's request (every number checked there, once)."""
    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip()) if args.methods else None
    return CalibrateRequest(
        concepts=tuple(args.concepts), methods=methods,
        layers=tuple(parse_layers(args.layers, num_layers, "layers")) if args.layers else None,
        strengths=tuple(parse_floats(args.strengths, "strengths")) if args.strengths else None,
        coarse_strengths=tuple(parse_floats(args.coarse_strengths, "coarse-strengths")) if args.coarse_strengths else None,
        band_strengths=_band_strengths(args.band_strengths),
        coarse_prompts=args.coarse_prompts, coarse_tokens=args.coarse_tokens, top_layers=args.top_layers,
        validate_all_methods=args.validate_all_methods, max_tokens=args.max_tokens, val_tokens=args.val_tokens,
        repetition_penalty=args.repetition_penalty,
        save=args.save, ship=args.ship, reuse_vectors=args.reuse_vectors, distributed=args.distributed, log=args.log)


def _echo(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def cmd_calibrate(args) -> int:
    from app.cli import _lab, _print_json

    lab = _lab(args)
    report = lab.calibrate(calibrate_request(args, lab.num_layers()), _echo)
    if report is not None and args.json:
        _print_json(report)
    return 0
