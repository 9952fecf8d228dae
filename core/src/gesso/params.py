"""Provider parameters: JSON Schema validation with readable messages, and body assembly.

Family plugins describe their provider request body with a JSON Schema (Draft 2020-12) shipped as
package data; that schema is the single source of truth for validation here and in the emulator.

:class:`BodyBuilder` assembles a nested provider body from what a caller may mix: the native nested
form (``imageGenerationConfig={...}``), flat keys (``cfgScale=7``) and OpenAI parameters (``size``).
When two of them set one field to different values it records a contradiction instead of letting one
silently win.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Iterable, Mapping
from importlib import resources
from typing import Any

from gesso.errors import InvalidRequestError, Violation

_MISSING = object()


def load_schema(package: str, filename: str) -> dict[str, Any]:
    """Load a JSON Schema shipped as package data (``importlib.resources``)."""
    schema: dict[str, Any] = json.loads(resources.files(package).joinpath(filename).read_text(encoding="utf-8"))
    return schema


@functools.lru_cache(maxsize=64)
def _validator_for(schema_json: str) -> Any:
    import jsonschema

    schema = json.loads(schema_json)
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    cls.check_schema(schema)
    return cls(schema)


_validators: dict[int, tuple[Mapping[str, Any], Any]] = {}
_fast_checks: dict[int, tuple[Mapping[str, Any], Any]] = {}


def is_valid(schema: Mapping[str, Any], instance: Any) -> bool:
    """Whether ``instance`` satisfies ``schema``: the compiled fast path when the schema allows it."""
    cached = _fast_checks.get(id(schema))
    if cached is None or cached[0] is not schema:
        from gesso._fastschema import compile_schema

        cached = (schema, compile_schema(schema))
        _fast_checks[id(schema)] = cached
    check = cached[1]
    return check(instance) if check is not None else validator(schema).is_valid(instance)


def validator(schema: Mapping[str, Any]) -> Any:
    """A compiled, cached validator for ``schema`` (checked against its metaschema once)."""
    cached = _validators.get(id(schema))
    if cached is not None and cached[0] is schema:
        return cached[1]
    compiled = _validator_for(json.dumps(schema, sort_keys=True))
    _validators[id(schema)] = (schema, compiled)
    return compiled


def subschema(schema: Mapping[str, Any], *path: str) -> Mapping[str, Any]:
    """The schema of the property at ``path`` (following local ``$ref``s), or ``{}``."""
    node: Mapping[str, Any] = deref(schema, schema)
    for key in path:
        node = deref(schema, node.get("properties", {}).get(key, {}))
    return node


def property_names(schema: Mapping[str, Any], *path: str) -> list[str]:
    """The property names the schema allows at ``path``."""
    return list(subschema(schema, *path).get("properties", {}))


def deref(root: Mapping[str, Any], node: Any) -> Mapping[str, Any]:
    while isinstance(node, Mapping) and "$ref" in node:
        ref = node["$ref"]
        if not ref.startswith("#/"):
            raise ValueError(f"only local $refs are supported, got {ref!r}")
        target: Any = root
        for part in ref[2:].split("/"):
            target = target[part]
        node = target
    return node if isinstance(node, Mapping) else {}


# --------------------------------------------------------------------------------------------------
# Readable violations


def schema_violations(
    schema: Mapping[str, Any], instance: Any, *, sources: Mapping[str, str] | None = None
) -> list[Violation]:
    """Every way ``instance`` breaks ``schema``, each as a ``path: message`` naming the allowed values.

    ``sources`` maps a body path to the caller's parameter that produced it (``{"imageGenerationConfig.
    numberOfImages": "n"}``) so messages name what the caller actually wrote.
    """
    found: list[Violation] = list(_not_json(instance, (), schema))
    if found:  # jsonschema cannot reason about NaN, Decimal or objects, and JSON cannot carry them
        return _with_sources(found, sources)
    if is_valid(schema, instance):
        return []
    for error in validator(schema).iter_errors(instance):
        found.extend(_render(error))
    found.sort(key=lambda v: v.path)
    return _with_sources(found, sources)


#: How deeply a body may nest; request bodies go four or five levels deep.
MAX_DEPTH = 32


#: The widest integer a body may carry: no provider reads a wider one, and wider ones are refused before any
#: check prints them (Python will not turn an integer of over 4,300 digits into text).
MAX_INT_BITS = 64


def _not_json(node: Any, path: tuple[Any, ...] = (), schema: Mapping[str, Any] | None = None) -> Iterable[Violation]:
    """Values JSON cannot carry exactly: NaN and infinities, and anything but str, int, float, bool,
    None, lists and objects with string keys (a ``Decimal``, a complex number, a set, an object), and text
    that is no Unicode (a lone surrogate, which has no UTF-8 form); and integers wider than
    :data:`MAX_INT_BITS`, named with the range ``schema`` gives the field when it gives one."""
    if isinstance(node, str):
        if not node.isascii():
            try:
                node.encode("utf-8")
            except UnicodeEncodeError as exc:
                yield Violation(dotted(path), f"must be valid Unicode text (a lone surrogate at position {exc.start})")
        return
    if isinstance(node, int) and not isinstance(node, bool) and node.bit_length() > MAX_INT_BITS:
        yield Violation(dotted(path), _too_wide(node, path, schema))
        return
    if isinstance(node, (bool, int)) or node is None:
        return
    if isinstance(node, float):
        if not math.isfinite(node):
            yield Violation(dotted(path), f"must be a finite number (got {node})")
    elif len(path) >= MAX_DEPTH:
        yield Violation(dotted(path), f"nests more than {MAX_DEPTH} levels deep")
    elif isinstance(node, Mapping):
        for key, value in node.items():
            if not isinstance(key, str):
                yield Violation(dotted(path), f"has a key that is not a string ({type(key).__name__})")
            else:
                yield from _not_json(value, (*path, key), schema)
    elif isinstance(node, (list, tuple)):
        for index, value in enumerate(node):
            yield from _not_json(value, (*path, index), schema)
    else:
        kind = type(node).__name__
        yield Violation(dotted(path), f"must be a JSON value: a string, number, boolean, list or object (got {kind})")


def _too_wide(value: int, path: tuple[Any, ...], schema: Mapping[str, Any] | None) -> str:
    node: Mapping[str, Any] = deref(schema, schema) if schema else {}
    for part in path:
        child = node.get("items") if isinstance(part, int) else node.get("properties", {}).get(part)
        node = deref(schema, child) if schema and child is not None else {}
    if any(key in node for key in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")):
        return f"must be {_range_text(node)} (got {short(value)})"
    return f"must be a number of at most {MAX_INT_BITS} bits, the widest a provider reads (got {short(value)})"


def json_loads(text: str | bytes, **kwargs: Any) -> Any:
    """``json.loads``, except that an integer too long for Python to read from text (over 4,300 digits) is read
    as an integer of about its width (its sign times 2 to the power of its bits) rather than raising: no image
    API takes one, and the body's checks then name the field (:data:`MAX_INT_BITS`), not a parser error."""
    return json.loads(text, parse_int=_read_int, **kwargs)


_INT_DIGITS = 4000
_BITS_PER_DIGIT = math.log2(10)


def _read_int(text: str) -> int:
    digits = len(text.lstrip("-"))
    if digits <= _INT_DIGITS:
        return int(text)
    return (-1 if text.startswith("-") else 1) * (1 << int(digits * _BITS_PER_DIGIT))


def _with_sources(found: list[Violation], sources: Mapping[str, str] | None) -> list[Violation]:
    return [_with_source(v, sources) for v in found] if sources else found


def to_json(body: Any) -> bytes:
    """The JSON bytes of a checked body, its numbers as :func:`as_sent` writes them."""
    return json.dumps(as_sent(body), separators=(",", ":"), allow_nan=False).encode()


#: The largest integer a float holds exactly (2**53): a float with no fraction up to it is sent as an integer.
EXACT_FLOAT_INT = 2**53


def as_sent(node: Any) -> Any:
    """``node`` as it will be sent: a number with no fraction is an integer (``1024``, not ``1024.0``), as JSON
    has one number type and some providers' validators take ``1024.0`` for a non-integer. Every check runs on
    this form, so ``width=4096.0`` meets the same rules as ``width=4096``. Returns ``node`` itself when nothing
    changes (and never copies bytes or images); a tuple becomes a list only when an item changes."""
    if isinstance(node, float):
        return int(node) if node.is_integer() and abs(node) <= EXACT_FLOAT_INT else node
    if isinstance(node, Mapping):
        changed = {key: as_sent(value) for key, value in node.items()}
        same = all(changed[key] is value for key, value in node.items())
        return node if same else changed
    if isinstance(node, (list, tuple)):
        items = [as_sent(value) for value in node]
        return node if all(a is b for a, b in zip(items, node)) else items
    return node


def _with_source(violation: Violation, sources: Mapping[str, str]) -> Violation:
    source = sources.get(violation.path)
    if source and source != violation.path:
        return Violation(violation.path, f"{violation.message} [from {source}]")
    return violation


def dotted(path: Iterable[Any]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def short(value: Any, limit: int = 60) -> str:
    """A repr short enough for an error message (images are megabytes of base64); never raises."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        return f"<an integer of {value.bit_length()} bits>"  # repr of a huge int is slow, or refused
    try:
        text = repr(value)
    except Exception:  # an object whose repr fails must not turn a clear error into another one
        return f"<{type(value).__name__}>"
    return text if len(text) <= limit else f"{text[: limit - 20]}...<{len(text)} chars>"


_TYPE_NAMES = {
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "object": "an object",
    "array": "a list",
    "null": "null",
}


def json_type(value: Any) -> str:
    """The JSON Schema type name of a Python value (``bool`` is ``boolean``, not ``integer``)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "object"
    if isinstance(value, (list, tuple)):
        return "array"
    return type(value).__name__


def _fmt_num(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _range_text(schema: Mapping[str, Any]) -> str:
    low = schema.get("minimum", schema.get("exclusiveMinimum"))
    high = schema.get("maximum", schema.get("exclusiveMaximum"))
    low_text = ("above " if "exclusiveMinimum" in schema else "") + _fmt_num(low) if low is not None else None
    high_text = ("below " if "exclusiveMaximum" in schema else "") + _fmt_num(high) if high is not None else None
    if low_text and high_text:
        return f"between {low_text} and {high_text}"
    if low_text:
        return f"at least {low_text}" if "exclusiveMinimum" not in schema else low_text
    return f"at most {high_text}" if "exclusiveMaximum" not in schema else str(high_text)


def _bounds_text(schema: Mapping[str, Any], low_key: str, high_key: str) -> str:
    low, high = schema.get(low_key), schema.get(high_key)
    if low is not None and high is not None:
        return f"{low} to {high}"
    return f"at least {low}" if low is not None else f"at most {high}"


def _render(error: Any) -> list[Violation]:
    path = dotted(error.absolute_path)
    schema = error.schema if isinstance(error.schema, Mapping) else {}
    custom = schema.get("x-message") if isinstance(schema, Mapping) else None
    value = error.instance
    kind = error.validator
    if custom and kind not in ("required", "additionalProperties", "type"):
        return [Violation(path, custom.replace("{value}", short(value)))]
    if kind == "required":
        missing = error.validator_value
        present = value if isinstance(value, Mapping) else {}
        return [Violation(dotted([*error.absolute_path, key]), "is required") for key in missing if key not in present]
    if kind == "additionalProperties":
        allowed = sorted(schema.get("properties", {}))
        extras = sorted(set(value) - set(allowed)) if isinstance(value, Mapping) else []
        hint = f"; allowed here: {', '.join(allowed)}" if allowed else ""
        return [Violation(dotted([*error.absolute_path, key]), f"unknown parameter{hint}") for key in extras]
    if kind == "dependentRequired":
        return [Violation(path, error.message.replace("is a dependency of", "is required together with"))]
    if kind == "type":
        expected = error.validator_value
        names = [expected] if isinstance(expected, str) else list(expected)
        wanted = " or ".join(_TYPE_NAMES.get(n, n) for n in names)
        return [Violation(path, f"must be {wanted} (got {json_type(value)} {short(value)})")]
    if kind == "enum":
        options = ", ".join(str(o) for o in error.validator_value)
        return [Violation(path, f"must be one of: {options} (got {short(value)})")]
    if kind == "const":
        return [Violation(path, f"must be {error.validator_value!r} (got {short(value)})")]
    if kind in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        return [Violation(path, f"must be {_range_text(schema)} (got {_fmt_num(value)})")]
    if kind == "multipleOf":
        return [Violation(path, f"must be a multiple of {_fmt_num(error.validator_value)} (got {_fmt_num(value)})")]
    if kind in ("minLength", "maxLength"):
        return [
            Violation(
                path,
                f"must be {_bounds_text(schema, 'minLength', 'maxLength')} characters long (got {len(value)})",
            )
        ]
    if kind in ("minItems", "maxItems"):
        return [Violation(path, f"must have {_bounds_text(schema, 'minItems', 'maxItems')} items (got {len(value)})")]
    if kind == "pattern":
        what = schema.get("description") or f"the pattern {error.validator_value}"
        return [Violation(path, f"must be {what} (got {short(value)})")]
    if kind == "not" and "required" in (error.validator_value or {}):
        together = " and ".join(error.validator_value["required"])
        return [Violation(path, f"{together} cannot be given together")]
    if kind == "oneOf" and isinstance(error.validator_value, list):
        alternatives = [alt.get("required") for alt in error.validator_value if isinstance(alt, Mapping)]
        if all(alternatives):
            choices = ", ".join("+".join(alt) for alt in alternatives if alt)
            return [Violation(path, f"give exactly one of: {choices}")]
    if kind is False or error.validator_value is False:
        return [Violation(path, "is not allowed here")]
    if len(error.message) > 200:  # jsonschema quotes the instance, which may be megabytes of base64
        return [Violation(path, f"does not satisfy the schema's {kind} rule")]
    return [Violation(path, error.message)]


# --------------------------------------------------------------------------------------------------
# Body assembly


def _same_value(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(_same_value(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same_value(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


class BodyBuilder:
    """Builds a nested JSON body from several sources, recording who set each field.

    ``set(("imageGenerationConfig", "width"), 512, "size")`` places a value; a second source giving a
    different value for the same field becomes a violation naming both. ``sources`` maps each dotted
    path to the caller parameter that set it, for :func:`schema_violations`.
    """

    def __init__(self) -> None:
        self.body: dict[str, Any] = {}
        self.sources: dict[str, str] = {}
        self.violations: list[Violation] = []

    def set(self, path: tuple[str, ...], value: Any, source: str) -> None:
        parent = self.body
        for depth, key in enumerate(path[:-1]):
            child = parent.setdefault(key, {})
            if not isinstance(child, dict):
                self.violations.append(Violation(dotted(path[: depth + 1]), f"must be an object (got {short(child)})"))
                return
            parent = child
        leaf = path[-1]
        where = dotted(path)
        current = parent.get(leaf, _MISSING)
        if current is _MISSING:
            parent[leaf] = value
            self.sources[where] = source
        elif isinstance(current, dict) and isinstance(value, Mapping):
            for key, item in value.items():
                self.set((*path, key), item, source)
        elif not _same_value(current, value):
            self.violations.append(
                Violation(
                    where,
                    f"contradicting values: {short(current)} from {self.sources.get(where, '?')} "
                    f"and {short(value)} from {source}",
                )
            )

    def merge(self, path: tuple[str, ...], mapping: Mapping[str, Any], source: str) -> None:
        """Merge a caller's nested object (``imageGenerationConfig={...}``) at ``path``."""
        if not mapping:
            self.set(path, {}, source)
        for key, value in mapping.items():
            self.set((*path, key), value, f"{source}.{key}" if "." not in source else source)

    def get(self, path: tuple[str, ...], default: Any = None) -> Any:
        node: Any = self.body
        for key in path:
            if not isinstance(node, Mapping) or key not in node:
                return default
            node = node[key]
        return node


#: What one family calls a field another spells differently (some use snake case, others
#: camel case; OpenAI's edit API says ``mask``): the names suggested for an unknown one.
SYNONYMS: dict[str, tuple[str, ...]] = {
    "negative_prompt": ("negativeText",),
    "negativeText": ("negative_prompt",),
    "mask": ("maskImage", "mask_image"),
    "mask_image": ("maskImage", "mask"),
    "maskImage": ("mask", "mask_image"),
    "mask_prompt": ("maskPrompt",),
    "init_image": ("image",),
    "style_preset": ("style",),
    "num_images": ("numberOfImages", "n"),
    "numberOfImages": ("n",),
}


def _fold(name: str) -> str:
    return name.replace("_", "").replace("-", "").lower()


def unknown_parameter(name: str, allowed: Iterable[str], where: str) -> Violation:
    """``name`` is not a parameter ``where``: list what is allowed, and suggest the closest name (the
    same name in another case or spelling, a known synonym, or a near miss)."""
    import difflib

    choices = sorted(set(allowed))
    folded = {_fold(choice): choice for choice in choices}
    guess = folded.get(_fold(name)) if isinstance(name, str) else None
    if guess is None and isinstance(name, str):
        offered = {*choices, "n", "size"}
        guess = next((s for s in SYNONYMS.get(name, ()) if s in offered and s != name), None)
        guess = guess or next(iter(difflib.get_close_matches(name, choices, n=1, cutoff=0.75)), None)
    hint = f" (did you mean {guess}?)" if guess else ""
    return Violation(str(name), f"unknown parameter for {where}{hint}; allowed: {', '.join(choices)}")


def raise_for(violations: list[Violation], *, model: str) -> None:
    """Raise one :class:`InvalidRequestError` listing every violation, if there are any."""
    if violations:
        unique = list(dict.fromkeys(violations))
        raise InvalidRequestError(unique, model=model)
