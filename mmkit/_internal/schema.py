"""JSON schema of a component's parameters, from their annotation strings (no imports needed)."""

from __future__ import annotations

import ast
import math
from typing import Any

from mmkit._internal.params import _split_top
from mmkit._internal.registry import ComponentInfo

_TYPES = {"int": "integer", "float": "number", "str": "string", "bool": "boolean", "None": "null",
          "list": "array", "tuple": "array", "dict": "object", "Sequence": "array", "Mapping": "object",
          "Path": "string"}


MAX_DEPTH = 16


def annotation_schema(annotation: str, depth: int = 0) -> dict[str, Any]:
    """A JSON schema fragment of a parameter's annotation string (read from a plugin's source, so it
    may be anything: what cannot be understood, or nests deeper than MAX_DEPTH, is ``{}`` = any)."""
    if depth > MAX_DEPTH:
        return {}
    try:
        return _annotation_schema(annotation, depth)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return {}


def _annotation_schema(annotation: str, depth: int) -> dict[str, Any]:
    ann = annotation.strip()
    alts = _split_top(ann, "|")
    if len(alts) > 1:
        return {"anyOf": [annotation_schema(a, depth + 1) for a in alts]}
    head, _, rest = ann.partition("[")
    head = head.split(".")[-1]
    if head == "Optional":
        return {"anyOf": [annotation_schema(rest[:-1], depth + 1), {"type": "null"}]}
    if head == "Union":
        return {"anyOf": [annotation_schema(a, depth + 1) for a in _split_top(rest[:-1], ",")]}
    if head == "Literal":
        values = [ast.literal_eval(a) for a in _split_top(rest[:-1], ",")]
        if not all(v is None or isinstance(v, (str, int, bool)) or (isinstance(v, float) and math.isfinite(v))
                   for v in values):
            return {}
        return {"enum": values}
    if head in _TYPES:
        return {"type": _TYPES[head]}
    return {}


def params_json_schema(info: ComponentInfo) -> dict[str, Any]:
    props: dict[str, Any] = {}
    required = []
    for p in info.params or ():
        prop = annotation_schema(p.type)
        if p.doc:
            prop["description"] = p.doc
        if p.required:
            required.append(p.name)
        else:
            prop["default"] = p.default
        props[p.name] = prop
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": f"{info.kind} {info.name}",
            "type": "object", "properties": props, "required": required, "additionalProperties": False}
