"""The lab's tabs: one module each. A module here that defines ``LABEL`` and ``ORDER`` is a tab.

The page shows the tabs in ``ORDER`` with each module's ``build(service, ctx)`` (then its
``wire(service, ctx)``, if any, once every tab exists); ``?tab=<module name>`` opens one. So a new
tab is one module in this folder (and its test); helpers without ``LABEL`` (``operations``) are not tabs.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from types import ModuleType


def discover(package: str) -> dict[str, ModuleType]:
    """The tab modules of ``package`` (those with LABEL and ORDER) by module name, in ORDER."""
    pkg = importlib.import_module(package)
    found = {}
    for info in pkgutil.iter_modules(pkg.__path__):
        mod = importlib.import_module(f"{package}.{info.name}")
        if hasattr(mod, "LABEL") and hasattr(mod, "ORDER"):
            found[info.name] = mod
    return dict(sorted(found.items(), key=lambda kv: (kv[1].ORDER, kv[0])))


@functools.lru_cache(maxsize=1)
def tab_modules() -> dict[str, ModuleType]:
    return discover(__name__)


def tab_ids() -> dict[str, str]:
    """Tab id (module name) -> label, in page order."""
    return {name: mod.LABEL for name, mod in tab_modules().items()}
