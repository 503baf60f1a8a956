"""JSON schema of a component's parameters, from their annotation strings (no imports needed)."""

from __future__ import annotations

import ast
from typing import Any

from mmkit.params import _split_top
from mmkit.registry import ComponentInfo

_TYPES = {"int": "integer", "float": "number", "str": "string", "bool": "boolean", "None": "null",
          "list": "array", "tuple": "array", "dict": "object", "Sequence": "array", "Mapping": "object",
          "Path": "string"}


def annotation_schema(annotation: str) -> dict[str, Any]:
    ann = annotation.strip()
    alts = _split_top(ann, "|")
    if len(alts) > 1:
        return {"anyOf": [annotation_schema(a) for a in alts]}
    head, _, rest = ann.partition("[")
    head = head.split(".")[-1]
    if head == "Optional":
        return {"anyOf": [annotation_schema(rest[:-1]), {"type": "null"}]}
    if head == "Union":
        return {"anyOf": [annotation_schema(a) for a in _split_top(rest[:-1], ",")]}
    if head == "Literal":
        return {"enum": [ast.literal_eval(a) for a in _split_top(rest[:-1], ",")]}
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
