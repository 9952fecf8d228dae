"""A compiled validity check for the JSON Schema subset gesso's schemas use: the fast path.

``compile_schema(schema)`` returns a function ``instance -> bool`` that agrees with jsonschema's
Draft 2020-12 validator on whether ``instance`` is valid, or ``None`` when the schema uses a keyword
outside the subset (callers then always use jsonschema). It only answers valid/invalid: when it says
invalid, :mod:`gesso.params` runs jsonschema to explain why. A valid body, the common case, then
costs tens of microseconds instead of hundreds. ``tests/test_fastschema.py`` checks the two agree.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

Check = Callable[[Any], bool]

_ANNOTATIONS = frozenset(
    {"$schema", "$id", "$defs", "$comment", "title", "description", "default", "examples", "deprecated",
     "readOnly", "writeOnly"}
)  # fmt: skip


class Unsupported(Exception):
    """The schema uses something this compiler does not handle."""


def _is_integer(v: Any) -> bool:
    kind = type(v)
    if kind is int:
        return True
    if kind is float:
        number: float = v
        return number.is_integer()
    return kind is not bool and (isinstance(v, int) or (isinstance(v, float) and v.is_integer()))


def _is_number(v: Any) -> bool:
    kind = type(v)  # exact types first: bool is an int subclass but not a JSON number
    return kind is int or kind is float or (kind is not bool and isinstance(v, (int, float)))


_TYPES: dict[str, Check] = {
    "string": lambda v: isinstance(v, str),
    "integer": _is_integer,
    "number": _is_number,
    "boolean": lambda v: isinstance(v, bool),
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "null": lambda v: v is None,
}


def _all_of(checks: tuple[Check, ...]) -> Check:
    # explicit loops: far cheaper than all() over a generator on this hot path
    if len(checks) == 1:
        return checks[0]

    def check(v: Any) -> bool:
        for each in checks:
            if not each(v):
                return False
        return True

    return check


def compile_schema(schema: Mapping[str, Any] | bool) -> Check | None:
    try:
        return _Compiler(schema).compile(schema)
    except Unsupported:
        return None


class _Compiler:
    def __init__(self, root: Any) -> None:
        self.root = root
        self.refs: dict[str, Check] = {}

    def compile(self, node: Any) -> Check:
        if node is True:
            return lambda v: True
        if node is False:
            return lambda v: False
        if not isinstance(node, Mapping):
            raise Unsupported(f"schema node {node!r}")
        checks: list[Check] = []
        for key, value in node.items():
            if key in _ANNOTATIONS or key.startswith("x-") or key in ("then", "else"):
                continue
            handler = getattr(self, "_k_" + key.replace("$", "dollar_"), None)
            if handler is None:
                raise Unsupported(key)
            checks.append(handler(value, node))
        if not checks:
            return lambda v: True
        return _all_of(tuple(checks))

    # -- keywords -----------------------------------------------------------------------------------

    def _k_dollar_ref(self, ref: str, _: Any) -> Check:
        if not isinstance(ref, str) or not ref.startswith("#"):
            raise Unsupported(f"$ref {ref!r}")
        if ref not in self.refs:
            target: Any = self.root
            for part in filter(None, ref[1:].split("/")):
                target = target[part.replace("~1", "/").replace("~0", "~")]
            holder: list[Check] = []
            self.refs[ref] = lambda v: holder[0](v)  # allows recursive schemas
            holder.append(self.compile(target))
        return self.refs[ref]

    def _k_type(self, value: Any, _: Any) -> Check:
        names = [value] if isinstance(value, str) else list(value)
        tests = tuple(_TYPES[name] for name in names)
        if len(tests) == 1:
            return tests[0]
        return lambda v: any(test(v) for test in tests)

    def _k_enum(self, options: list[Any], _: Any) -> Check:
        if not all(isinstance(o, str) for o in options):
            raise Unsupported("enum of non-strings")
        allowed = frozenset(options)
        return lambda v: isinstance(v, str) and v in allowed

    def _k_const(self, value: Any, _: Any) -> Check:
        if not isinstance(value, str):
            raise Unsupported("const of a non-string")
        return lambda v: isinstance(v, str) and v == value

    def _k_minimum(self, limit: float, _: Any) -> Check:
        return lambda v: not _is_number(v) or v >= limit

    def _k_maximum(self, limit: float, _: Any) -> Check:
        return lambda v: not _is_number(v) or v <= limit

    def _k_exclusiveMinimum(self, limit: float, _: Any) -> Check:
        return lambda v: not _is_number(v) or v > limit

    def _k_exclusiveMaximum(self, limit: float, _: Any) -> Check:
        return lambda v: not _is_number(v) or v < limit

    def _k_multipleOf(self, divisor: int | float, _: Any) -> Check:
        def check(v: Any) -> bool:
            if not _is_number(v):
                return True
            if isinstance(divisor, float):  # as jsonschema: compare the quotient with its integer part
                quotient: float = v / divisor
                try:
                    return int(quotient) == quotient
                except OverflowError:
                    return False
            return not (v % divisor)

        return check

    def _k_minLength(self, limit: int, _: Any) -> Check:
        return lambda v: not isinstance(v, str) or len(v) >= limit

    def _k_maxLength(self, limit: int, _: Any) -> Check:
        return lambda v: not isinstance(v, str) or len(v) <= limit

    def _k_pattern(self, pattern: str, _: Any) -> Check:
        compiled = re.compile(pattern)
        return lambda v: not isinstance(v, str) or compiled.search(v) is not None

    def _k_minItems(self, limit: int, _: Any) -> Check:
        return lambda v: not isinstance(v, list) or len(v) >= limit

    def _k_maxItems(self, limit: int, _: Any) -> Check:
        return lambda v: not isinstance(v, list) or len(v) <= limit

    def _k_items(self, items: Any, node: Any) -> Check:
        if "prefixItems" in node:
            raise Unsupported("prefixItems")
        check = self.compile(items)
        return lambda v: not isinstance(v, list) or all(check(item) for item in v)

    def _k_required(self, names: list[str], _: Any) -> Check:
        wanted = frozenset(names)
        return lambda v: not isinstance(v, dict) or wanted.issubset(v)

    def _k_properties(self, props: Mapping[str, Any], _: Any) -> Check:
        compiled = {name: self.compile(sub) for name, sub in props.items()}

        items = tuple(compiled.items())

        def check(v: Any) -> bool:
            if not isinstance(v, dict):
                return True
            if len(items) <= len(v):  # walk the smaller side: `if` branches name one property
                for name, sub in items:
                    if name in v and not sub(v[name]):
                        return False
                return True
            for name, value in v.items():
                found = compiled.get(name)
                if found is not None and not found(value):
                    return False
            return True

        return check

    def _k_additionalProperties(self, extra: Any, node: Any) -> Check:
        if "patternProperties" in node:
            raise Unsupported("patternProperties")
        known = frozenset(node.get("properties", {}))
        if extra is False:
            return lambda v: not isinstance(v, dict) or known.issuperset(v)
        check = self.compile(extra)
        return lambda v: not isinstance(v, dict) or all(check(val) for key, val in v.items() if key not in known)

    def _k_dependentRequired(self, deps: Mapping[str, list[str]], _: Any) -> Check:
        pairs = tuple((key, tuple(needed)) for key, needed in deps.items())
        return lambda v: (
            not isinstance(v, dict) or all(all(n in v for n in needed) for key, needed in pairs if key in v)
        )

    def _k_propertyNames(self, names: Any, _: Any) -> Check:
        check = self.compile(names)
        return lambda v: not isinstance(v, dict) or all(check(key) for key in v)

    def _k_allOf(self, subs: list[Any], _: Any) -> Check:
        return _all_of(tuple(self.compile(sub) for sub in subs))

    def _k_anyOf(self, subs: list[Any], _: Any) -> Check:
        checks = tuple(self.compile(sub) for sub in subs)
        return lambda v: any(check(v) for check in checks)

    def _k_oneOf(self, subs: list[Any], _: Any) -> Check:
        checks = tuple(self.compile(sub) for sub in subs)
        return lambda v: sum(1 for check in checks if check(v)) == 1

    def _k_not(self, sub: Any, _: Any) -> Check:
        check = self.compile(sub)
        return lambda v: not check(v)

    def _k_if(self, condition: Any, node: Any) -> Check:
        test = self.compile(condition)
        then = self.compile(node.get("then", True))
        otherwise = self.compile(node.get("else", True))
        return lambda v: then(v) if test(v) else otherwise(v)
