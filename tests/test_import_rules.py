"""House rules checked statically (AST), so they hold for code nobody has run yet.

- app/core never imports gradio or app.ui; app/ui never imports mlx, mlx_lm or app.core.
- No pickle, torch.load or yaml.load anywhere in app/ (YAML is read with yaml.safe_load only).
- Nothing binds 0.0.0.0 by default.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

APP = Path(__file__).resolve().parent.parent / "app"


def _py_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.py") if "__pycache__" not in p.parts)


def _parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def imported_modules(tree: ast.Module, path: Path) -> set[str]:
    """Every module a file imports, anywhere (also inside functions), relative ones resolved."""
    rel = path.relative_to(APP.parent).with_suffix("")
    package = list(rel.parts[:-1])  # the package a relative import starts from
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            found.add(mod)
            found.update(f"{mod}.{a.name}" for a in node.names)  # from app import core
        elif isinstance(node, ast.Call):
            # importlib.import_module("x") / __import__("x") with a literal name
            fn = node.func
            name = fn.attr if isinstance(fn, ast.Attribute) else getattr(fn, "id", "")
            if name in ("import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant):
                if isinstance(node.args[0].value, str):
                    found.add(node.args[0].value)
    return found


def _hits(modules: set[str], banned: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if any(m == b or m.startswith(b + ".") for b in banned))


def test_the_scanner_sees_imports(tmp_path):
    """The rule tests below can only fail if the scanner finds imports: prove it does."""
    src = (
        "import gradio as gr\nfrom mlx import core\nfrom . import ui\n"
        "def f():\n    import pickle\n    importlib.import_module('mlx_lm')\n"
    )
    fake = APP / "core" / "fake_module_for_scanner.py"  # path only, never written
    mods = imported_modules(ast.parse(src), fake)
    assert {"gradio", "mlx", "pickle", "mlx_lm", "app.core.ui"} <= mods
    assert _hits(mods, ("gradio",)) == ["gradio"]


def test_core_never_imports_gradio_or_ui():
    files = _py_files(APP / "core")
    assert files, "app/core has no Python files?"
    bad = {}
    for f in files:
        hits = _hits(imported_modules(_parse(f), f), ("gradio", "gradio_client", "app.ui"))
        if hits:
            bad[str(f.relative_to(APP.parent))] = hits
    assert not bad, f"app/core must not import the UI: {bad}"


def test_ui_never_imports_mlx_or_core():
    ui = APP / "ui"
    files = _py_files(ui) if ui.is_dir() else []  # the UI may not exist yet: nothing to check
    bad = {}
    for f in files:
        hits = _hits(imported_modules(_parse(f), f), ("mlx", "mlx_lm", "app.core"))
        if hits:
            bad[str(f.relative_to(APP.parent))] = hits
    assert not bad, f"app/ui must not import MLX or app.core (go through the service): {bad}"


def _call_name(node: ast.Call) -> str:
    parts = []
    fn = node.func
    while isinstance(fn, ast.Attribute):
        parts.append(fn.attr)
        fn = fn.value
    if isinstance(fn, ast.Name):
        parts.append(fn.id)
    return ".".join(reversed(parts))


def unsafe_uses(tree: ast.Module) -> list[str]:
    problems = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            for n in names:
                if n.split(".")[0] in ("pickle", "cPickle", "dill", "joblib", "shelve", "marshal"):
                    problems.append(f"line {node.lineno}: imports {n}")
            if isinstance(node, ast.ImportFrom) and node.module == "yaml":
                for a in node.names:
                    if a.name in ("load", "load_all", "unsafe_load", "full_load", "Loader", "UnsafeLoader"):
                        problems.append(f"line {node.lineno}: from yaml import {a.name}")
            if isinstance(node, ast.ImportFrom) and node.module == "torch" and any(a.name == "load" for a in node.names):
                problems.append(f"line {node.lineno}: from torch import load")
        elif isinstance(node, ast.Call):
            name = _call_name(node)
            # Only reading is dangerous: yaml.dump with a SafeDumper subclass is fine.
            if name in ("torch.load", "yaml.load", "yaml.load_all", "yaml.unsafe_load", "yaml.full_load",
                        "pickle.load", "pickle.loads", "np.load", "numpy.load"):
                if name.endswith("np.load") or name.endswith("numpy.load"):
                    # numpy.load is only unsafe with allow_pickle=True
                    if not any(k.arg == "allow_pickle" and getattr(k.value, "value", False) is True for k in node.keywords):
                        continue
                problems.append(f"line {node.lineno}: {name}(")
    return problems


def binds_all_interfaces(tree: ast.Module) -> list[str]:
    """A literal "0.0.0.0" used as a default value (argument default, keyword, or assignment)."""
    problems = []
    for node in ast.walk(tree):
        defaults = []
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            defaults = list(node.args.defaults) + [d for d in node.args.kw_defaults if d is not None]
        elif isinstance(node, ast.Call):
            defaults = [k.value for k in node.keywords if k.arg in ("default", "host", "server_name", "bind")]
        elif isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
            defaults = [node.value]
        elif isinstance(node, ast.Dict):
            defaults = list(node.values)
        for d in defaults:
            if isinstance(d, ast.Constant) and d.value == "0.0.0.0":
                problems.append(f"line {d.lineno}: 0.0.0.0 as a default")
            if isinstance(d, ast.BoolOp | ast.IfExp):  # e.g. os.environ.get(...) or "0.0.0.0"
                for sub in ast.walk(d):
                    if isinstance(sub, ast.Constant) and sub.value == "0.0.0.0":
                        problems.append(f"line {sub.lineno}: 0.0.0.0 as a fallback")
            if isinstance(d, ast.Call):  # os.environ.get("HOST", "0.0.0.0")
                for a in d.args[1:]:
                    if isinstance(a, ast.Constant) and a.value == "0.0.0.0":
                        problems.append(f"line {a.lineno}: 0.0.0.0 as a fallback")
    return problems


def test_the_safety_scanners_catch_bad_code():
    bad = ast.parse(
        "import pickle\nimport yaml, torch\nyaml.load(s)\ntorch.load(p)\nfrom yaml import load\n"
        "np.load(p, allow_pickle=True)\n"
        "def serve(host='0.0.0.0'):\n    pass\n"
        "p.add_argument('--host', default='0.0.0.0')\nHOST = os.environ.get('H', '0.0.0.0')\n"
    )
    found = unsafe_uses(bad)
    assert len(found) == 5, found
    assert len(binds_all_interfaces(bad)) == 3
    good = ast.parse(
        "import yaml\nyaml.safe_load(s)\nyaml.safe_dump(d)\nnp.load(p)\n"
        "def serve(host='127.0.0.1'):\n    pass\n"
        "p.add_argument('--host', default='127.0.0.1', help='0.0.0.0 exposes the lab')\n"
    )
    assert unsafe_uses(good) == [] and binds_all_interfaces(good) == []


@pytest.mark.parametrize("check", [unsafe_uses, binds_all_interfaces], ids=["unsafe-loading", "bind-0.0.0.0"])
def test_app_has_no_unsafe_loading_or_open_binding(check):
    files = _py_files(APP)
    assert len(files) >= 10
    bad = {str(f.relative_to(APP.parent)): p for f in files if (p := check(_parse(f)))}
    assert not bad, bad


def test_domain_imports_neither_mlx_nor_gradio():
    """app.domain is the shared vocabulary of UI, CLI, service and core: numpy only."""
    files = _py_files(APP / "domain")
    assert files, "app/domain has no Python files?"
    banned = ("mlx", "mlx_lm", "gradio", "gradio_client", "app.core", "app.service", "app.ui", "app.library")
    bad = {str(f.relative_to(APP.parent)): h for f in files if (h := _hits(imported_modules(_parse(f), f), banned))}
    assert not bad, f"app/domain must stay free of MLX, Gradio and the other layers: {bad}"


# Every command of the CLI, the maintainers' calibration search included (it runs through Lab.calibrate).
CLI_FILES = ("cli.py", "cli_generate.py", "cli_concepts.py", "cli_calibrate.py")
FACADE = "app.service.lab"


def facade_violations(modules: set[str]) -> list[str]:
    """Imports of the layers below the facade: app.core, app.library, MLX, or app.service other than app.service.lab."""
    bad = _hits(modules, ("app.core", "app.library", "mlx", "mlx_lm"))
    bad += sorted(m for m in modules if m.startswith("app.service.") and not (m == FACADE or m.startswith(FACADE + ".")))
    return bad


def test_the_facade_rule_sees_reaches_below_it():
    fake = APP / "ui" / "fake_module_for_scanner.py"  # path only, never written
    src = ("from app.service.lab import Lab\nfrom app.domain.requests import SteerRequest\n"
           "def f():\n    from app.service.model_service import ModelService\n    from app.library.slugs import slugify\n"
           "    import app.core.registry\n")
    assert facade_violations(imported_modules(ast.parse(src), fake)) == [
        "app.core.registry", "app.library.slugs", "app.library.slugs.slugify", "app.service.model_service",
        "app.service.model_service.ModelService"]


def test_ui_and_cli_reach_the_lab_only_through_its_facade():
    """The UI and the user commands import app.domain and app.service.lab, never the core, the library or the
    service's insides: the library stays private to the service, which writes it under the model lock."""
    files = _py_files(APP / "ui") + [APP / name for name in CLI_FILES]
    assert all(f.is_file() for f in files) and len(files) > 20
    bad = {str(f.relative_to(APP.parent)): h for f in files if (h := facade_violations(imported_modules(_parse(f), f)))}
    assert not bad, f"go through app.service.lab (Lab, Lab.concepts): {bad}"
