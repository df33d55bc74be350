"""Keep layout containers (the tabs, an accordion, a column) out of Gradio's progress targets.

Measured in Chromium (benchmarks/bench_ui_stream.py --trace): Gradio's page keeps a loading
status for every component that has been a progress target of an event that ran (by default an
event's outputs), and on EVERY streamed message it refreshes all of them; for a container that
refresh also takes a snapshot of the props of every component inside it (Svelte's
``$state.snapshot``, one ``structuredClone`` per prop). Events that select a tab (the URL state at
page load, the tutorial's "try it", "use this setting") have the ``gr.Tabs`` among their outputs,
so after page load every message of a side-by-side stream cloned the whole page's props,
tens of thousands of calls per second of streaming, and the page's main thread fell behind
(single tasks of 300-2000 ms). Such events show their progress on their other outputs instead;
the tab still switches, since outputs are unchanged.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

CONTAINERS = (gr.Tabs, gr.Tab, gr.Accordion, gr.Column, gr.Row, gr.Group)


def is_container(block: Any) -> bool:
    return isinstance(block, CONTAINERS)


def keep_progress_off_containers(demo: gr.Blocks) -> int:
    """For each event with a container among its outputs and no explicit ``show_progress_on``,
    show progress on its other outputs only; returns how many events changed."""
    changed = 0
    for fn in demo.fns.values():
        outputs = list(getattr(fn, "outputs", None) or [])
        if getattr(fn, "show_progress_on", None) is not None or not any(is_container(o) for o in outputs):
            continue
        fn.show_progress_on = [o for o in outputs if not is_container(o)]  # may be empty: no progress shown
        changed += 1
    return changed


def container_progress_targets(config: dict) -> list[tuple[int, str]]:
    """(event id, component type) for every container an event of ``config`` shows progress on."""
    layout = {"tabs", "tabitem", "accordion", "column", "row", "group"}
    types = {c["id"]: c.get("type") for c in config.get("components", [])}
    out = []
    for dep in config.get("dependencies", []):
        targets = dep.get("show_progress_on")
        targets = dep.get("outputs", []) if targets is None else targets
        out += [(dep.get("id"), types.get(i)) for i in targets if types.get(i) in layout]
    return out
