"""Schema errors worded the way Bedrock words them (its validator's messages match the everit library).

``Malformed input request: #/textToImageParams/text: expected maxLength: 1024, actual: 1469, please
reformat your input and try again.`` The same JSON Schema that the SDK validates with is used here, so
the emulator rejects exactly what the schema forbids.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gesso.params import is_valid, json_type, validator

_EVERIT_TYPES = {
    "string": "String",
    "integer": "Integer",
    "number": "Number",
    "boolean": "Boolean",
    "object": "JSONObject",
    "array": "JSONArray",
    "null": "Null",
}


def _found_type(value: Any) -> str:
    # everit names a found decimal "BigDecimal"; every other type as it names expected ones
    kind = json_type(value)
    return "BigDecimal" if kind == "number" else _EVERIT_TYPES.get(kind, kind)


def _num(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def pointer(path: Any) -> str:
    return "#" + "".join(f"/{part}" for part in path)


def messages(schema: Mapping[str, Any], body: Any) -> list[str]:
    """Every schema violation of ``body``, in everit wording. As in everit, a number written with a
    fraction (``1024.0``) is not an integer."""
    if is_valid(schema, body) and not _integral_floats(body):
        return []
    out: list[str] = []
    for error in _strict(schema).iter_errors(body):
        out.extend(_message(error))
    return out


def _integral_floats(node: Any) -> bool:
    if isinstance(node, float):
        return node.is_integer()
    if isinstance(node, dict):
        return any(_integral_floats(v) for v in node.values())
    if isinstance(node, list):
        return any(_integral_floats(v) for v in node)
    return False


_strict_validators: dict[int, tuple[Mapping[str, Any], Any]] = {}


def _strict(schema: Mapping[str, Any]) -> Any:
    cached = _strict_validators.get(id(schema))
    if cached is None or cached[0] is not schema:
        import jsonschema

        base = validator(schema)
        checker = base.TYPE_CHECKER.redefine(
            "integer", lambda _, value: isinstance(value, int) and not isinstance(value, bool)
        )
        # types-jsonschema declares validators.extend without annotations (it returns a validator class)
        cls = jsonschema.validators.extend(type(base), type_checker=checker)  # type: ignore[no-untyped-call]
        cached = (schema, cls(schema))
        _strict_validators[id(schema)] = cached
    return cached[1]


def _message(error: Any) -> list[str]:
    where = pointer(error.absolute_path)
    kind = error.validator
    value = error.instance
    limit = error.validator_value
    if "propertyNames" in error.schema_path:
        return [f"{where}: extraneous key [{value}] is not permitted"]
    if kind == "not" and limit == {}:
        parent, key = list(error.absolute_path)[:-1], list(error.absolute_path)[-1]
        return [f"{pointer(parent)}: extraneous key [{key}] is not permitted"]
    if kind == "required":
        return [f"{where}: required key [{key}] not found" for key in limit if key not in (value or {})]
    if kind == "additionalProperties":
        allowed = set((error.schema or {}).get("properties", {}))
        return [f"{where}: extraneous key [{key}] is not permitted" for key in value if key not in allowed]
    if kind == "type":
        wanted = limit if isinstance(limit, str) else limit[0]
        return [f"{where}: expected type: {_EVERIT_TYPES.get(wanted, wanted)}, found: {_found_type(value)}"]
    if kind == "maxLength":
        return [f"{where}: expected maxLength: {limit}, actual: {len(value)}"]
    if kind == "minLength":
        return [f"{where}: expected minLength: {limit}, actual: {len(value)}"]
    if kind == "maximum":
        return [f"{where}: {_num(value)} is not less or equal to {_num(limit)}"]
    if kind == "minimum":
        return [f"{where}: {_num(value)} is not greater or equal to {_num(limit)}"]
    if kind == "exclusiveMaximum":
        return [f"{where}: {_num(value)} is not less than {_num(limit)}"]
    if kind == "exclusiveMinimum":
        return [f"{where}: {_num(value)} is not greater than {_num(limit)}"]
    if kind == "multipleOf":
        return [f"{where}: {_num(value)} is not a multiple of {_num(limit)}"]
    if kind in ("enum", "const"):
        return [f"{where}: {value} is not a valid enum value"]
    if kind == "minItems":
        return [f"{where}: expected minimum item count: {limit}, found: {len(value)}"]
    if kind == "maxItems":
        return [f"{where}: expected maximum item count: {limit}, found: {len(value)}"]
    if kind == "pattern":
        return [f"{where}: string [{value}] does not match pattern {limit}"]
    if kind == "dependentRequired":
        return [f"{where}: property [{dep}] is required" for deps in limit.values() for dep in deps if dep not in value]
    if kind == "not":
        return [f"{where}: subject must not be valid against schema {_compact(limit)}"]
    if kind == "oneOf":
        return [f"{where}: #: only 1 subschema matches out of {len(limit)}"]
    if kind == "anyOf":
        return [f"{where}: #: no subschema matched out of the total {len(limit)} subschemas"]
    return [f"{where}: {kind} constraint violated"]  # never echo the instance: it may be megabytes of base64


def _compact(schema: Any) -> str:
    import json

    return json.dumps(schema, separators=(",", ":"))


def malformed(errors: list[str]) -> str:
    """The ValidationException message Bedrock sends for schema errors."""
    if not errors:
        return "Malformed input request, please reformat your input and try again."
    return f"Malformed input request: {', '.join(errors)}, please reformat your input and try again."
