"""A component's parameters: its constructor's typed keyword arguments.

They are read from the source with :mod:`ast`, so ``mmkit show`` and recipe validation never import
the component's module (and with it torch or timm). Documentation comes from the ``Args:`` section of
the class docstring (Google style). Arguments the engine supplies (see :data:`CONTEXT_PARAMS`) are
not recipe parameters and are left out.
"""

from __future__ import annotations

import ast
import difflib
import importlib.util
import inspect
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mmkit._internal.errors import ParameterError

#: Constructor arguments supplied by the engine when it assembles a model, never by a recipe.
CONTEXT_PARAMS = frozenset({"input_dims", "input_dim", "modality_dims", "token_inputs"})

_MISSING = "<required>"


@dataclass(frozen=True)
class ParamInfo:
    """One constructor parameter: ``name``, annotation ``type`` (as written), ``default`` (a Python
    literal, or ``REQUIRED``) and ``doc``."""

    name: str
    type: str = "Any"
    default: Any = _MISSING
    doc: str = ""

    REQUIRED = _MISSING

    @property
    def required(self) -> bool:
        return self.default == _MISSING

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _literal(node: ast.AST | None) -> Any:
    if node is None:
        return _MISSING
    try:
        return ast.literal_eval(node)
    except (ValueError, SyntaxError, TypeError):
        return ast.unparse(node)


def parse_docstring_args(doc: str | None) -> dict[str, str]:
    """Map argument name -> description from a Google-style ``Args:`` section."""
    if not doc:
        return {}
    doc = inspect.cleandoc(doc)
    out: dict[str, str] = {}
    in_args = False
    current: str | None = None
    indent: int | None = None
    for line in doc.splitlines():
        if re.match(r"^(Args|Arguments|Parameters):\s*$", line):
            in_args, current, indent = True, None, None
            continue
        if not in_args:
            continue
        if line and not line[0].isspace():
            break  # next section
        if not line.strip():
            continue
        this_indent = len(line) - len(line.lstrip())
        match = re.match(r"^\s*(\*{0,2}\w+)\s*(\([^)]*\))?\s*:\s*(.*)$", line)
        if match and (indent is None or this_indent <= indent):
            indent = this_indent
            current = match.group(1).lstrip("*")
            out[current] = match.group(3).strip()
        elif current is not None:
            out[current] = (out[current] + " " + line.strip()).strip()
    return out


def _find_def(tree: ast.Module, qualname: str) -> ast.ClassDef | ast.FunctionDef | None:
    """The class or function ``qualname`` (``"Outer.Inner"`` allowed) defined in ``tree``."""
    body: list[ast.stmt] = tree.body
    node: ast.ClassDef | ast.FunctionDef | None = None
    for part in qualname.split("."):
        node = next((n for n in body if isinstance(n, (ast.ClassDef, ast.FunctionDef)) and n.name == part), None)
        if node is None:
            return None
        body = node.body
    return node


def _signature_params(fn: ast.FunctionDef, doc: dict[str, str], drop_first: bool) -> list[ParamInfo]:
    args = fn.args
    positional = args.posonlyargs + args.args
    defaults: list[ast.AST | None] = [None] * (len(positional) - len(args.defaults)) + list(args.defaults)
    pairs = list(zip(positional, defaults))[1 if drop_first else 0:]
    pairs += list(zip(args.kwonlyargs, args.kw_defaults))
    params = []
    for arg, default in pairs:
        if arg.arg in CONTEXT_PARAMS:
            continue
        ann = ast.unparse(arg.annotation) if arg.annotation is not None else "Any"
        params.append(ParamInfo(arg.arg, ann, _literal(default), doc.get(arg.arg, "")))
    return params


def _init_params(cls_node: ast.ClassDef) -> list[ParamInfo] | None:
    for node in cls_node.body:
        if isinstance(node, ast.FunctionDef) and node.name == "__init__":
            doc = parse_docstring_args(ast.get_docstring(cls_node)) | parse_docstring_args(ast.get_docstring(node))
            return _signature_params(node, doc, drop_first=True)
    return None


def _class_summary_doc(cls_node: ast.ClassDef | ast.FunctionDef) -> str:
    doc = ast.get_docstring(cls_node) or ""
    return doc.split("\n\n")[0].replace("\n", " ").strip()


def read_params(target: str) -> tuple[list[ParamInfo], str]:
    """Parameters and docstring summary of ``"module:Class"`` read from source, without importing it.

    Only the parent packages of the module are imported (to locate the file). Falls back to importing
    the class when the source cannot be read (e.g. a compiled module) or when the class defines no
    ``__init__`` of its own and its single base class is not defined in the same module.
    """
    module_name, _, qualname = target.partition(":")
    try:
        spec = importlib.util.find_spec(module_name)
    except (ImportError, ValueError) as exc:
        raise ParameterError(f"cannot locate module {module_name!r} of {target!r}: {exc}") from exc
    if spec is None:
        raise ParameterError(f"cannot locate module {module_name!r} of {target!r}")
    if spec.origin and spec.origin.endswith(".py"):
        tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
        node = _find_def(tree, qualname)
        if isinstance(node, ast.ClassDef):
            summary = _class_summary_doc(node)
            seen: set[str] = set()
            while node is not None and node.name not in seen:  # follow same-module base classes
                seen.add(node.name)
                params = _init_params(node)
                if params is not None:
                    return params, summary
                bases = [b.id for b in node.bases if isinstance(b, ast.Name)]
                node = _find_def(tree, bases[0]) if len(bases) == 1 else None
                node = node if isinstance(node, ast.ClassDef) else None
        elif isinstance(node, ast.FunctionDef):  # e.g. a dataset factory function
            doc = parse_docstring_args(ast.get_docstring(node))
            return _signature_params(node, doc, drop_first=False), _class_summary_doc(node)
    try:
        return _params_by_import(target)
    except Exception as exc:  # noqa: BLE001 - name the component, not just the import error
        raise ParameterError(
            f"cannot read the parameters of {target!r} from source, and importing it failed: "
            f"{type(exc).__name__}: {exc}"
        ) from exc


def _params_by_import(target: str) -> tuple[list[ParamInfo], str]:
    import importlib

    module_name, _, qualname = target.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    sig = inspect.signature(obj)
    doc = parse_docstring_args(inspect.getdoc(obj))
    params = []
    for p in sig.parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or p.name in CONTEXT_PARAMS or p.name == "self":
            continue
        ann = p.annotation if isinstance(p.annotation, str) else getattr(p.annotation, "__name__", "Any")
        if p.annotation is inspect.Parameter.empty:
            ann = "Any"
        default = _MISSING if p.default is inspect.Parameter.empty else p.default
        params.append(ParamInfo(p.name, str(ann), default, doc.get(p.name, "")))
    summary = (inspect.getdoc(obj) or "").split("\n\n")[0].replace("\n", " ")
    return params, summary


# ---------------------------------------------------------------- type checking of recipe values

_SIMPLE = {"int": int, "float": (int, float), "str": str, "bool": bool, "None": type(None),
           "list": list, "tuple": (list, tuple), "dict": dict, "Path": str, "pathlib.Path": str}


def _split_top(text: str, sep: str) -> list[str]:
    parts, depth, cur = [], 0, ""
    for ch in text:
        if ch in "[(":
            depth += 1
        elif ch in "])":
            depth -= 1
        if ch == sep and depth == 0:
            parts.append(cur.strip())
            cur = ""
        else:
            cur += ch
    parts.append(cur.strip())
    return parts


def value_matches(value: Any, annotation: str) -> bool:
    """Whether a recipe value fits an annotation string (a practical subset of typing).

    Understands ``int``, ``float`` (ints accepted), ``str``, ``bool``, ``None``, ``X | Y``,
    ``Optional[X]``, ``Literal[...]``, ``list[...]``/``tuple[...]``/``dict[...]``/``Mapping``/
    ``Sequence`` (the container only). Anything else is accepted.
    """
    ann = annotation.strip().strip("'\"")
    if ann in ("Any", "object", ""):
        return True
    alts = _split_top(ann, "|")
    if len(alts) > 1:
        return any(value_matches(value, a) for a in alts)
    head, _, rest = ann.partition("[")
    head = head.strip().split(".")[-1]
    if head == "Optional":
        return value is None or value_matches(value, rest[:-1])
    if head == "Union":
        return any(value_matches(value, a) for a in _split_top(rest[:-1], ","))
    if head == "Literal":
        return any(value == _literal(ast.parse(a, mode="eval").body) for a in _split_top(rest[:-1], ","))
    if head in ("Sequence",):
        return isinstance(value, (list, tuple))
    if head in ("Mapping",):
        return isinstance(value, dict)
    expected: Any = _SIMPLE.get(head)
    if expected is None:
        return True
    if expected in (int, (int, float)) and isinstance(value, bool):
        return False
    return isinstance(value, expected)


def toml_key(key: str) -> str:
    """``key`` as a key path shows it: bare when TOML allows, else quoted (``"."``, ``"a b"``, ``""``)."""
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


def validate_params(params: dict[str, Any], infos: list[ParamInfo], where: str) -> None:
    """Check ``params`` against a component's parameters; the error names ``where`` and the key."""
    known = {p.name: p for p in infos}
    for key, value in params.items():
        if key not in known:
            close = difflib.get_close_matches(key, list(known), n=3, cutoff=0.6)
            hint = f"; did you mean {' or '.join(close)}?" if close else f"; known: {', '.join(known) or '(none)'}"
            raise ParameterError(f"{where}.{toml_key(key)}: unknown key{hint}")
        if not value_matches(value, known[key].type):
            raise ParameterError(
                f"{where}.{key}: expected {known[key].type}, got {type(value).__name__} {value!r}"
            )
    missing = [p.name for p in infos if p.required and p.name not in params]
    if missing:
        raise ParameterError(f"{where}: missing required key(s): {', '.join(missing)}")
