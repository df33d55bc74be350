"""Guarded YAML loading for untrusted concept files and bundles.

Data is built only by ``yaml.safe_load`` (never ``yaml.load``). Before that, the text
is composed once with a SafeLoader subclass that refuses anchors/aliases (YAML bombs),
explicit tags such as ``!!python/object`` and absurd nesting, and keeps the node tree so
validation messages can point at line numbers.
"""

from __future__ import annotations

from typing import Any

import yaml

from app.domain import limits

from .errors import ConceptValidationError


def not_unicode(text: str) -> str | None:
    """Why ``text`` cannot be stored or served as UTF-8 (a lone surrogate such as "\\ud800"), else None."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        return (f"contains a character that is not valid Unicode text (U+{ord(text[e.start]):04X} at "
                f"position {e.start + 1}, a lone surrogate); remove it")
    return None

MAX_DEPTH = limits.YAML_DEPTH
MAX_NODES = limits.YAML_VALUES
_CORE = "tag:yaml.org,2002:"
_ALLOWED_TAGS = {_CORE + t for t in ("str", "int", "float", "bool", "null", "seq", "map")}


class _Refused(yaml.MarkedYAMLError):
    """Raised from inside the composer so the usual line/column reporting applies."""


class _GuardedComposer(yaml.SafeLoader):
    """SafeLoader that composes nodes only and rejects constructs we never allow."""

    _depth = 0
    _nodes = 0

    def compose_node(self, parent, index):  # noqa: D401 - PyYAML hook
        event = self.peek_event()
        mark = event.start_mark
        self._nodes += 1
        if self._nodes > MAX_NODES:  # stop while parsing: a 100,000-pair upload costs milliseconds
            raise _Refused(problem=f"more than {MAX_NODES} values (a concept holds at most 512 pairs)",
                           problem_mark=mark)
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            raise _Refused(
                problem="anchors and aliases (&name / *name) are not allowed in concept files",
                problem_mark=mark,
            )
        tag = getattr(event, "tag", None)
        if tag is not None and tag not in _ALLOWED_TAGS:
            if tag.startswith(_CORE + "python/") or "python" in tag:
                problem = (
                    f"Python object tag {tag.replace(_CORE, '!!')!r} is not allowed: "
                    "concept data is plain YAML and can never create Python objects"
                )
            else:
                problem = f"explicit YAML tag {tag.replace(_CORE, '!!')!r} is not allowed; use plain values"
            raise _Refused(problem=problem, problem_mark=mark)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _Refused(problem=f"nesting deeper than {MAX_DEPTH} levels", problem_mark=mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def compose_mapping_node(self, anchor):  # noqa: D401 - PyYAML hook
        node = super().compose_mapping_node(anchor)
        seen: set[str] = set()
        for key_node, _value in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                if key_node.value in seen:
                    raise _Refused(problem=f"duplicate key {key_node.value!r}", problem_mark=key_node.start_mark)
                seen.add(key_node.value)
        return node


def _where(err: yaml.YAMLError) -> str:
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    if mark is None:
        return ": "
    return f" at line {mark.line + 1}, column {mark.column + 1}: "


def load_yaml(text: str | bytes, source: str, max_bytes: int) -> tuple[Any, yaml.Node | None]:
    """Parse untrusted YAML; return ``(data, root_node)`` or raise ConceptValidationError."""
    if isinstance(text, bytes):
        if len(text) > max_bytes:
            raise ConceptValidationError(f"{source}: file is {len(text)} bytes; the limit is {max_bytes}")
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ConceptValidationError(f"{source}: not UTF-8 text (byte {e.start}); save it as UTF-8") from None
    if len(text) > max_bytes:  # before encoding: a character is at least one byte
        raise ConceptValidationError(f"{source}: text is over {max_bytes} bytes; the limit is {max_bytes}")
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        raise ConceptValidationError(f"{source}: text is {size} bytes; the limit is {max_bytes}")
    if not_unicode(text):
        raise ConceptValidationError(f"{source}: {not_unicode(text)}")
    try:
        loader = _GuardedComposer(text)
        try:  # compose once (guarded), then build the data from those nodes: one parse, not two
            node = loader.get_single_node()
            data = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except yaml.YAMLError as e:
        problem = getattr(e, "problem", None) or str(e)
        context = getattr(e, "context", None)
        detail = f"{context}: {problem}" if context else problem
        raise ConceptValidationError(f"{source}: invalid YAML{_where(e)}{detail}") from None
    return data, node


class LineMap:
    """Find the line of a field (``("pairs", 3, "positive")``) in a composed node tree."""

    def __init__(self, root: yaml.Node | None):
        self.root = root

    def _child(self, node: yaml.Node, step: str | int, want_key: bool = False) -> yaml.Node | None:
        if isinstance(node, yaml.MappingNode) and isinstance(step, str):
            for key_node, value_node in node.value:
                if isinstance(key_node, yaml.ScalarNode) and key_node.value == step:
                    return key_node if want_key else value_node
        if isinstance(node, yaml.SequenceNode) and isinstance(step, int) and 0 <= step < len(node.value):
            return node.value[step]
        return None

    def line(self, path: tuple, key: bool = False) -> int | None:
        """1-based line of the value at ``path`` (or of its key); nearest ancestor if absent."""
        node = self.root
        if node is None:
            return None
        for i, step in enumerate(path):
            last = i == len(path) - 1
            nxt = self._child(node, step, want_key=key and last)
            if nxt is None:
                break
            node = nxt
        return node.start_mark.line + 1


class FlowList(list):
    """A list written inline (``[a, b]``) by ``dump_yaml``; plain list otherwise."""


class FlowDict(dict):
    """A mapping written inline (``{k: v}``) by ``dump_yaml``; plain dict otherwise."""


class _Dumper(yaml.SafeDumper):
    """SafeDumper (plain data only) with readable styles: inline markers, literal multi-line text."""


def _represent_str(dumper: yaml.SafeDumper, data: str) -> yaml.Node:
    # The emitter falls back to a quoted style whenever a literal block could not round-trip.
    style = "|" if "\n" in data else None
    return dumper.represent_scalar(_CORE + "str", data, style=style)


_Dumper.add_representer(str, _represent_str)
_Dumper.add_representer(FlowList, lambda d, v: d.represent_sequence(_CORE + "seq", v, flow_style=True))
_Dumper.add_representer(FlowDict, lambda d, v: d.represent_mapping(_CORE + "map", v, flow_style=True))


def dump_yaml(data: Any) -> str:
    """Serialise plain data as block-style YAML: keys in given order, unicode kept, no wrapping."""
    return yaml.dump(
        data,
        Dumper=_Dumper,
        sort_keys=False,
        allow_unicode=True,
        default_flow_style=False,
        width=1_000_000,
    )


def _indented_lists(self, flow=False, indentless=False):
    """Indent list items under their key ('pairs:\\n  - positive: ...'), as people write it."""
    return yaml.SafeDumper.increase_indent(self, flow, False)


_Dumper.increase_indent = _indented_lists
