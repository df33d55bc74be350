"""What the tabs share while the page is being built: the service, the Tabs, named components."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

MODEL_CONCURRENCY = dict(concurrency_id="model", concurrency_limit=1)
"""Pass as **MODEL_CONCURRENCY to every event that touches the model: they queue, never overlap."""


@dataclass
class UIContext:
    service: Any
    tabs: Any = None  # gr.Tabs; switch with gr.Tabs(selected="<tab id>")
    components: dict[str, Any] = field(default_factory=dict)  # "playground.prompt" -> component
    on_load: list[tuple[Callable, list, list]] = field(default_factory=list)  # (fn, inputs, outputs)
    library_events: list[Any] = field(default_factory=list)  # events after which every concept list refreshes

    def register(self, prefix: str, **components: Any) -> None:
        for name, comp in components.items():
            self.components[f"{prefix}.{name}"] = comp

    def get(self, key: str) -> Any:
        if key not in self.components:
            raise KeyError(f"UI component {key!r} was not registered; registered: {sorted(self.components)}")
        return self.components[key]
