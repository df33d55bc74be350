"""`steering-lab generate` and `steering-lab sweep`: side-by-side runs and sweeps from a shell."""

from __future__ import annotations

import argparse
import shutil
import sys
import textwrap

from app.domain import limits
from app.errors import CLIError


def register(sub, add) -> None:
    sp = add("generate", "generate the baseline and the steered answer side by side", cmd_generate)
    sp.add_argument("--prompt", required=True, help="the user message")
    sp.add_argument("--concept", required=True, help="concept slug, a mix like 'happy:0.7,excited:0.3', or random:SLUG")
    sp.add_argument("--layer", type=int, action="append", help="layer to steer (repeat for several; default: the concept's recommended layer)")
    sp.add_argument("--strength", type=float, action="append", help="strength per --layer (default: recommended)")
    g = sp.add_mutually_exclusive_group()
    g.add_argument("--relative", dest="relative", action="store_true", default=True, help="strength relative to the layer's typical residual norm (default)")
    g.add_argument("--absolute", dest="relative", action="store_false", help="strength multiplies the raw vector")
    sp.add_argument("--mode", choices=["add", "logits"], default="add", help="residual addition (default) or logit-space contrast")
    sp.add_argument("--guidance", type=float, default=1.0, help="logits mode: base + guidance*(steered-base)")
    sp.add_argument("--schedule", choices=["constant", "linear_decay", "ramp_up", "pulse"], default="constant")
    sp.add_argument("--schedule-length", type=int, default=16, help="tokens of decay/ramp, or K for a pulse")
    sp.add_argument("--positions", choices=["all", "prompt", "generated"], default="all")
    sp.add_argument("--system", default=None, help="optional system prompt")
    _op_args(sp)
    sp.add_argument("--op-layers", default="", help="more layers for a non-add --op: 'all', '8-20' or '4,12'")
    sp.add_argument("--condition", default=None, help="conditional steering: act only where this concept's projection is high")
    sp.add_argument("--threshold", type=float, default=1.0,
                    help="with --condition: open where the projection exceeds THRESHOLD x its typical positive projection")
    sp.add_argument("--effects", action="store_true", help="with --json: also the per-token effect map (KL, promoted tokens)")
    sp.add_argument("--prompted", action=argparse.BooleanOptionalAction, default=True,
                    help="also show the unsteered model under the concept's own system prompt, in the same batch "
                         "(steering vs prompting; default: on)")
    _sampling(sp, max_tokens=64)

    sp = add("sweep", "sweep layers x strengths and score every cell", cmd_sweep)
    sp.add_argument("--concept", required=True)
    sp.add_argument("--layers", required=True, help="e.g. 6-18 or 8,12,16")
    sp.add_argument("--strengths", required=True, help="comma-separated, e.g. 0.1,0.2,0.4")
    sp.add_argument("--prompt", required=True)
    g = sp.add_mutually_exclusive_group()
    g.add_argument("--relative", dest="relative", action="store_true", default=True)
    g.add_argument("--absolute", dest="relative", action="store_false")
    sp.add_argument("--save-recommendation", action="store_true", help="store the recommended setting in the concept for this model")
    _op_args(sp, sweep=True)
    _sampling(sp, max_tokens=32)


def _op_args(sp: argparse.ArgumentParser, sweep: bool = False) -> None:
    from app.service.lab import operation_choices

    ops = [o for o in operation_choices() if o.hook_point == "residual"]
    helps = "; ".join(f"{o.name}: {o.help} ({o.param} in [{o.lo:g}, {o.hi:g}])" for o in ops)
    sp.add_argument("--op", choices=[o.name for o in ops], default="add", help=f"the operation at the steered layers. {helps}"
                    + (". --strengths are then its parameter values" if sweep else ""))
    if not sweep:
        sp.add_argument("--op-param", type=float, default=None, help="the operation's parameter (a, t or theta; default per op)")


def _sampling(sp: argparse.ArgumentParser, max_tokens: int) -> None:
    sp.add_argument("--max-tokens", type=int, default=max_tokens)
    sp.add_argument("--temperature", type=float, default=0.0)
    sp.add_argument("--top-p", type=float, default=1.0)
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--repetition-penalty", type=float, default=1.0,
                    help="1 = off (default); about 1.15 keeps a base model from repeating its lines (mlx-lm's rule, "
                         f"over the last {limits.REPETITION_CONTEXT} tokens of each answer and its prompt)")


def _params(args):
    from app.types import GenerationParams

    return GenerationParams(max_tokens=args.max_tokens, temperature=args.temperature, top_p=args.top_p, seed=args.seed,
                            repetition_penalty=args.repetition_penalty)


def _validate_early(args, prompt: str, system=None) -> None:
    """Check what can be checked without the model, so bad input fails in well under a second."""
    from app.domain.checks import validate_params, validate_text

    validate_text(prompt, "prompt")
    if system:
        validate_text(system, "system prompt")
    validate_params(_params(args))


def _layer_plan(args):
    """(layer, strength) pairs from --layer/--strength (a --layer alone gets the default strength), or None:
    the concept's recommended setting. Checked before the model loads, so bad input fails at once."""
    from app.domain.limits import DEFAULT_STRENGTH, strength_limit
    from app.domain.parse import parse_float

    if args.op_param is not None:
        from app.service.lab import check_operation_param

        check_operation_param(args.op, args.op_param, "--op-param")
    if args.op == "add" and (args.op_layers or args.op_param is not None):
        raise CLIError("--op-param and --op-layers are for --op ablate|cap|clamp|rotate; add uses --strength")
    for s in args.strength or []:
        parse_float(s, "strength", strength_limit(args.relative))
    for l in args.layer or []:
        if l < 0:
            raise CLIError(f"layer {l} does not exist: layers are numbered from 0")
    if not (args.layer or args.strength):
        return None
    if not args.layer:
        raise CLIError("--strength needs a --layer")
    strengths = args.strength or [DEFAULT_STRENGTH["relative"]] * len(args.layer)
    if len(args.layer) != len(strengths):
        raise CLIError("give one --strength per --layer")
    return list(zip(args.layer, strengths))


def cmd_generate(args) -> int:
    from app.cli import _lab, _print_json
    from app.domain.parse import op_layers_from_text
    from app.domain.requests import SteerRequest

    _validate_early(args, args.prompt, args.system)
    layers = _layer_plan(args)
    svc = _lab(args)
    req = SteerRequest(prompt=args.prompt, concept=args.concept, layers=layers, relative=args.relative,
                       mode=args.mode, guidance=args.guidance, schedule=args.schedule,
                       schedule_length=args.schedule_length, positions=args.positions, system=args.system,
                       params=_params(args), op=args.op, op_param=args.op_param,
                       op_layers=op_layers_from_text(args.op_layers, svc.num_layers()),
                       condition=args.condition, threshold=args.threshold, effects=bool(args.effects and args.json),
                       prompted=args.prompted)
    if args.json:
        chunk, settings = svc.compare(req)
        _print_json({
            "baseline": chunk.baseline_text,
            "prompted": chunk.prompted_text,
            "steered": chunk.steered_text,
            "judge": chunk.stats.get("judge"),
            "divergence": chunk.divergence,
            "settings": settings,
            "stats": chunk.stats,
            "applied": chunk.applied,
            "steered_gates": chunk.steered_gates,
            "effects": chunk.effects,
        })
        return 0
    width = max(30, (shutil.get_terminal_size((100, 20)).columns - 3) // 2)
    last = None
    for chunk, settings in svc.steer(req):
        last = (chunk, settings)
        if sys.stdout.isatty():
            sys.stdout.write(f"\r\033[K[{chunk.stats['step']}/{args.max_tokens}] tokens")
            sys.stdout.flush()
    if last is None:
        return 1
    chunk, settings = last
    if sys.stdout.isatty():
        sys.stdout.write("\r\033[K")
    print_side_by_side(chunk, settings, width)
    return 0


def print_side_by_side(chunk, settings: dict, width: int) -> None:
    """The run's settings, then baseline | steered in two columns, the prompted row and the judge's line."""
    layers_txt = ", ".join(f"L{e['layer']}@{e['strength']:g}" for e in settings["layers"])
    op = "" if settings["op"] == "add" else f"   op: {settings['op']} {settings['op_param_name']}={settings['op_param']:g}"
    if settings.get("condition"):
        op += f" when {settings['condition']} > {settings['threshold']:g}"
    if settings.get("repetition_penalty", 1.0) != 1.0:
        op += f"   repetition penalty {settings['repetition_penalty']:g} (every row)"
    print(f"concept: {settings['label']}   {layers_txt} ({settings['strength_mode']}, {settings['mode']})   source: {settings['source']}{op}")
    left = textwrap.wrap(chunk.baseline_text, width) or [""]
    right = textwrap.wrap(chunk.steered_text, width) or [""]
    print(f"{'BASELINE':<{width}} | STEERED")
    print("-" * width + "-+-" + "-" * width)
    for i in range(max(len(left), len(right))):
        l = left[i] if i < len(left) else ""
        r = right[i] if i < len(right) else ""
        print(f"{l:<{width}} | {r}")
    if chunk.prompted_text is not None:
        print(f"\nPROMPTED (unsteered, system prompt: {settings.get('prompted_system')!r}):")
        print(textwrap.fill(chunk.prompted_text, 2 * width + 3) or "(empty)")
    div = chunk.divergence
    print(f"\nfirst differing token: {div if div is not None else 'none (identical)'}; "
          f"steered finish: {chunk.stats['steered_finish']}")
    print(judge_line(chunk.stats.get("judge")))


def judge_line(judge) -> str:
    """One line: the judge's score of each row, signed so that higher = more of the concept."""
    if not judge:
        return "judge: none for this choice (mixes have no single judge)"
    rows = [f"{k} {judge[k]:+.3f}" for k in ("baseline", "prompted", "steered") if k in judge]
    acc = f", held-out accuracy {judge['accuracy']:.2f}" if judge.get("accuracy") is not None else ""
    return f"judge ({judge['label']}{acc}): " + " | ".join(rows)


def cmd_sweep(args) -> int:
    from app.cli import _lab, _print_json
    from app.domain.limits import SWEEP_CELLS, op_param_limit, strength_limit
    from app.domain.parse import parse_floats, parse_layers
    from app.domain.requests import SweepRequest

    _validate_early(args, args.prompt)
    if args.save_recommendation and args.op != "add":
        raise CLIError("--save-recommendation stores a strength for addition; it cannot be used with --op " + args.op)
    layers = parse_layers(args.layers, what="layers")
    limit = strength_limit(args.relative) if args.op == "add" else op_param_limit(args.op)
    strengths = parse_floats(args.strengths, "strengths", limit)
    if len(layers) * len(strengths) > SWEEP_CELLS:
        raise CLIError(f"{len(layers) * len(strengths)} cells is too many for one sweep (at most {SWEEP_CELLS})")
    svc = _lab(args)
    layers = parse_layers(args.layers, svc.num_layers(), "layers")

    def progress(done: int, total: int, msg: str) -> None:
        print(f"\r{msg}: step {done}/{total}", end="", file=sys.stderr, flush=True)

    req = SweepRequest(args.prompt, args.concept, tuple(layers), tuple(strengths), _params(args),
                       relative=args.relative, op=args.op)
    res = svc.sweep(req, progress=progress)
    print(file=sys.stderr)
    if args.save_recommendation and res.recommended:
        svc.concepts.save_recommendation(args.concept, res.recommended[0], res.recommended[1], args.relative)
    if args.json:
        _print_json(res.as_dict())
        return 0
    print(f"baseline: {res.baseline_text[:100]!r}")
    if res.judge:
        ref = res.judge.get("prompted_change")
        print(f"judge: {res.judge['label']}" + (f"; prompted (no steering) changes it by {ref:+.3f}" if ref is not None else ""))
    print(f"{'layer':>5} {(res.op == 'add' and 'strength' or res.op):>8} {'judge':>7} {'vector':>7} {'ppl x':>6} {'dist-2':>6} ok  text")
    for c in res.cells:
        js = f"{c.judge_score:>+7.3f}" if c.judge_score is not None else f"{'-':>7}"
        print(f"{c.layer:>5} {c.strength:>8g} {js} {c.concept_score:>7.2f} {c.ppl_ratio:>6.2f} {c.distinct2:>6.2f} "
              f"{'yes' if c.coherent else 'no ':<3} {c.text[:60]!r}")
    print("(judge: change of the concept's judge vs the baseline; vector: moved along the concept's own vector)")
    print(f"recommended: {res.recommended}")
    return 0
