"""Concept YAML schema: untrusted text -> validated ``Concept`` and back.

Every problem is reported with file, line and field so a person editing the YAML by
hand can fix it. ``parse_concept(concept_to_yaml(c), c.slug) == c`` for valid concepts.
"""

from __future__ import annotations

from typing import Any

from app.types import CATEGORIES, Concept, JudgeSpec, SystemPromptPair

from . import fields as f
from .errors import ConceptValidationError
from .fields import CONCEPT_KEYS, MAX_CONCEPT_BYTES, MAX_NAME_LEN, Checker, kind
from .slugs import validate_slug
from .yamlsafe import FlowDict, FlowList, LineMap, dump_yaml, load_yaml

__all__ = [
    "CONCEPT_KEYS", "MAX_CONCEPT_BYTES", "concept_from_data", "concept_to_dict", "concept_to_yaml",
    "judge_to_dict", "parse_concept",
]


def concept_from_data(
    data: Any, slug: str, source: str, lines: LineMap | None = None, prefix: tuple = ()
) -> Concept:
    """Validate already-loaded YAML data; ``prefix`` locates it inside a bigger document."""
    slug = validate_slug(slug)
    chk = Checker(source, lines or LineMap(None), prefix)
    if data is None:
        raise ConceptValidationError(f"{source}: the file is empty; a concept needs at least 'name' and 'pairs'")
    if not isinstance(data, dict):
        chk.fail((), f"must be a mapping of fields ({', '.join(CONCEPT_KEYS)}), got {kind(data)}")
        raise ConceptValidationError("\n".join(chk.problems), chk.problems)
    for key in data:
        if key not in CONCEPT_KEYS:
            hint = " (the slug comes from the file name)" if key == "slug" else ""
            chk.fail((str(key),), f"unknown key {key!r}{hint}; allowed keys: {', '.join(CONCEPT_KEYS)}", key=True)
    name = None
    if "name" not in data:
        chk.fail(("name",), "missing required field 'name'")
    else:
        name = chk.text(data["name"], ("name",), MAX_NAME_LEN)
    description = data.get("description")
    description = "" if description is None else chk.text(description, ("description",), MAX_CONCEPT_BYTES, True)
    category = data.get("category")
    category = "custom" if category is None else category
    if category not in CATEGORIES:
        chk.fail(("category",), f"must be one of {', '.join(CATEGORIES)}, got {category!r}")
    system = None
    if data.get("system_prompts") is not None:
        sub = f.text_pair(chk, data["system_prompts"], ("system_prompts",))
        system = SystemPromptPair(*sub) if sub else None
    pairs = f.pair_list(chk, data.get("pairs"), ("pairs",))
    recipe = f.recipe(chk, data.get("recipe"))
    if not data.get("pairs") and data.get("recipe") is None:
        chk.fail(("pairs",), "a concept needs at least 1 contrast pair (or a 'recipe' that mixes other concepts)")
    provenance = chk.plain(data.get("provenance") or {}, ("provenance",))
    if data.get("provenance") is not None and not isinstance(data["provenance"], dict):
        chk.fail(("provenance",), f"must be a mapping, got {kind(data['provenance'])}")
    options = chk.plain(data.get("recipe_options") or {}, ("recipe_options",))
    if data.get("recipe_options") is not None and not isinstance(data["recipe_options"], dict):
        chk.fail(("recipe_options",), f"must be a mapping, got {kind(data['recipe_options'])}")
    recommended = f.recommended(chk, data.get("recommended"))
    tags = f.tags(chk, data.get("tags"))
    method = f.method(chk, data.get("method"))
    opposite = f.opposite(chk, data.get("opposite"), slug)
    judge = f.judge(chk, data.get("judge"), len(pairs))
    if chk.problems:
        raise ConceptValidationError("\n".join(chk.problems), chk.problems)
    return Concept(
        slug=slug, name=name, description=description, category=category, pairs=pairs,
        system_prompts=system, tags=tags, provenance=provenance, recommended=recommended,
        recipe=recipe, recipe_options=options, judge=judge, method=method, opposite=opposite,
    )


def parse_concept(text: str | bytes, slug: str, source: str | None = None) -> Concept:
    """Parse and validate one concept file's text; ``slug`` comes from the file name."""
    validate_slug(slug)
    source = source or f"{slug}.yaml"
    data, node = load_yaml(text, source, MAX_CONCEPT_BYTES)
    return concept_from_data(data, slug, source, LineMap(node))


def concept_to_dict(concept: Concept) -> dict[str, Any]:
    """Plain data in schema order (empty optional fields left out)."""
    d: dict[str, Any] = {"name": concept.name}
    if concept.description:
        d["description"] = concept.description
    d["category"] = concept.category
    if concept.tags:
        d["tags"] = list(concept.tags)
    if concept.judge is not None:
        d["judge"] = judge_to_dict(concept.judge)
    if concept.system_prompts is not None:
        d["system_prompts"] = {
            "positive": concept.system_prompts.positive,
            "negative": concept.system_prompts.negative,
        }
    if concept.opposite:
        d["opposite"] = concept.opposite
    if concept.method:
        d["method"] = concept.method
    if concept.pairs or concept.recipe is None:
        d["pairs"] = [{"positive": p.positive, "negative": p.negative} for p in concept.pairs]
    if concept.provenance:
        d["provenance"] = dict(concept.provenance)
    if concept.recommended:
        d["recommended"] = {
            key: {"layer": r.layer, "strength": float(r.strength), "strength_mode": r.strength_mode, "source": r.source,
                  **({"band": list(r.band)} if r.band else {})}
            for key, r in concept.recommended.items()
        }
    if concept.recipe is not None:
        d["recipe"] = [{"concept": s, "weight": float(w)} for s, w in concept.recipe]
    if concept.recipe_options:
        d["recipe_options"] = dict(concept.recipe_options)
    return d


def judge_to_dict(spec: JudgeSpec) -> dict[str, Any]:
    """Only the fields the judge's kind reads, in a readable order."""
    d: dict[str, Any] = {"kind": spec.kind}
    if spec.kind == "lexicon":
        d["categories"] = list(spec.categories)
    elif spec.kind == "words":
        d["words"] = list(spec.words)
    elif spec.kind == "readability":
        d["metric"] = spec.metric
    elif spec.kind == "probe" and spec.layer is not None:
        d["layer"] = spec.layer
    d["sign"] = spec.sign
    return d


def concept_to_yaml(concept: Concept) -> str:
    """Readable YAML in the schema above (SafeDumper: plain data only, tags/recommendations inline)."""
    d = concept_to_dict(concept)
    if "tags" in d:
        d["tags"] = FlowList(d["tags"])
    if "recommended" in d:
        d["recommended"] = {k: FlowDict(v) for k, v in d["recommended"].items()}
    if "judge" in d:
        d["judge"] = FlowDict({k: FlowList(v) if isinstance(v, list) else v for k, v in d["judge"].items()})
    try:
        return dump_yaml(d)
    except Exception as e:  # e.g. a provenance value YAML cannot represent
        raise ConceptValidationError(f"concept {concept.slug!r} cannot be written as YAML: {e}") from None
