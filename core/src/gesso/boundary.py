"""The tenant boundary: what arrives in a request is data, never configuration.

A service that forwards its users' input to gesso (the proxy, or any application) passes it as
:class:`Untrusted`, apart from the keyword arguments it sets itself. For what is in an :class:`Untrusted`:

- only an **allow-list** of names is taken: OpenAI's Images fields (:data:`OPENAI_FIELDS`), the model's own
  parameters as its JSON Schema declares them (at any depth, since gesso takes them flat or nested), the
  names its family declares as request options (:attr:`gesso.types.Model.request_options`, e.g. SDXL's
  ``negative_prompt``), and whatever the service granted (``granted``). Every other name, every SDK option
  (``image_store``, ``timeout``...) and every provider option (credentials, region, endpoint, retries...), now
  and any a plugin adds later, is refused with the code ``not_allowed``, before anything is sent;
- ``os.environ/NAME`` is never read: it is only text (only the kwargs a program passes are configuration);
- text must be text: a string that is not valid Unicode (a lone surrogate, which JSON can escape) is refused.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import attrs

from gesso.errors import Violation
from gesso.params import deref, short

if TYPE_CHECKING:
    from collections.abc import Iterable

    from gesso.provider import Provider
    from gesso.types import Model

    # the fields' converters as mypy's attrs plugin reads them; at run time ``dict`` and ``frozenset`` themselves
    def _fields(fields: Mapping[str, Any]) -> dict[str, Any]: ...
    def _granted(names: Iterable[str]) -> frozenset[str]: ...
else:
    _fields, _granted = dict, frozenset

#: OpenAI's Images fields a caller may send besides ``model``, ``prompt`` and the input images, on every
#: operation (a field an operation's model cannot use is refused by the model's family, naming it)
OPENAI_FIELDS = (
    "n", "size", "quality", "response_format", "style", "user", "output_format", "output_compression",
    "background", "moderation", "stream", "partial_images", "input_fidelity",
    "snap_size",  # gesso's: the nearest size the model makes rather than a refusal (gesso.sizes)
)  # fmt: skip
#: How deep a caller's value may nest (request bodies go four or five levels deep)
MAX_DEPTH = 32


@attrs.frozen
class Untrusted:
    """What arrived in a request: the fields besides ``model``, ``prompt`` and the input images.

    ``granted`` names options the service lets its callers set besides the allow-list (a proxy deployment's
    ``model_info.caller_params``); their values are data too (never read from the environment)."""

    fields: Mapping[str, Any] = attrs.field(converter=_fields)
    granted: frozenset[str] = attrs.field(default=frozenset(), converter=_granted)


def refused(untrusted: Untrusted, model: Model, provider: Provider | None) -> list[Violation]:
    """A violation for each name in ``untrusted`` a caller may not send to ``model``."""
    from gesso import options as call_options

    allowed = allowed_names(model)
    options = call_options.names(provider)
    grantable = call_options.grantable(provider)
    problems: list[Violation] = []
    for name in untrusted.fields:
        if not isinstance(name, str) or not is_text(name):
            problems.append(Violation(printable(name), "a field name must be valid Unicode text"))
        elif name in untrusted.granted and name in options and name not in grantable:
            problems.append(
                Violation(
                    name,
                    "cannot be granted to a request: it is configuration (credentials, "
                    f"endpoints, where images go); grantable: {', '.join(sorted(grantable))}",
                )
            )
        elif name not in allowed and name not in untrusted.granted:
            problems.append(_not_allowed(name, model, allowed, options))
    return problems


def text_problems(untrusted: Untrusted) -> list[Violation]:
    """A violation for each string in ``untrusted``'s values that is not valid Unicode, and for each value that
    is not JSON data (a request carries no file path, file object or bytes: gesso would read them)."""
    found = []
    for name, value in untrusted.fields.items():
        found += [Violation(path, "is not valid Unicode text (a lone surrogate)") for path in bad_text(value, name)]
        found += [Violation(path, f"must be JSON data (got {kind})") for path, kind in not_data(value, name)]
    return found


def not_data(value: Any, path: str, depth: int = 0) -> Iterator[tuple[str, str]]:
    """The paths (and type names) of the values in ``value`` that JSON could not have carried."""
    if value is None or isinstance(value, (str, bool, int, float)) or depth > MAX_DEPTH:
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            yield from not_data(item, f"{path}.{printable(key)}", depth + 1)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from not_data(item, f"{path}[{index}]", depth + 1)
    else:
        yield path, type(value).__name__


def _not_allowed(name: str, model: Model, allowed: frozenset[str], options: frozenset[str]) -> Violation:
    if name in options:
        return Violation(name, "set by the proxy's deployment; a client cannot change it")
    close = difflib.get_close_matches(name, sorted(allowed), n=1, cutoff=0.75)
    hint = f"did you mean {close[0]}? " if close else ""
    own = sorted(allowed - set(OPENAI_FIELDS))
    return Violation(
        printable(name),
        f"not a parameter a caller may send to {model.id}; {hint}allowed: {', '.join(OPENAI_FIELDS)} and the "
        f"model's own parameters: {', '.join(own)}",
    )


def allowed_names(model: Model) -> frozenset[str]:
    """Every name a caller may send to ``model``: OpenAI's fields, its schema's property names at any depth,
    and its family's request options."""
    key = id(model.param_schema)
    cached = _names.get(key)
    if cached is None or cached[0] is not model.param_schema:
        cached = (model.param_schema, frozenset(schema_names(model.param_schema)))
        _names[key] = cached
    return frozenset((*OPENAI_FIELDS, *cached[1], *model.request_options))


_names: dict[int, tuple[Mapping[str, Any], frozenset[str]]] = {}


def schema_names(schema: Mapping[str, Any]) -> set[str]:
    """The property names ``schema`` declares anywhere (through ``$ref``, ``allOf``/``anyOf``/``oneOf``,
    ``if``/``then``/``else``, ``items`` and ``$defs``)."""
    found: set[str] = set()
    seen: set[int] = set()
    stack: list[Any] = [schema]
    while stack:
        node = deref(schema, stack.pop())
        if id(node) in seen or not isinstance(node, Mapping):
            continue
        seen.add(id(node))
        properties = node.get("properties")
        if isinstance(properties, Mapping):
            found.update(k for k in properties if isinstance(k, str))
            stack.extend(properties.values())
        for word in ("allOf", "anyOf", "oneOf", "prefixItems"):
            stack.extend(node.get(word) or ())
        for word in ("if", "then", "else", "items", "not", "additionalProperties"):
            if isinstance(node.get(word), Mapping):
                stack.append(node[word])
        stack.extend((node.get("$defs") or {}).values())
    return found


def is_text(value: str) -> bool:
    """Whether ``value`` is valid Unicode (no lone surrogates)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def bad_text(value: Any, path: str, depth: int = 0) -> Iterator[str]:
    """The paths of the strings in ``value`` (keys included) that are not valid Unicode."""
    if isinstance(value, str):
        if not is_text(value):
            yield printable(path)
    elif depth > MAX_DEPTH:
        return
    elif isinstance(value, Mapping):
        for key, item in value.items():
            if isinstance(key, str) and not is_text(key):
                yield f"{path}.{printable(key)}"
            else:
                yield from bad_text(item, f"{path}.{key}", depth + 1)
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from bad_text(item, f"{path}[{index}]", depth + 1)


def printable(value: Any, limit: int = 80) -> str:
    """``value`` as text safe for a message or a log line: lone surrogates and control characters escaped,
    long text shortened."""
    text = value if isinstance(value, str) else short(value)
    escaped = text.encode("utf-8", "backslashreplace").decode("utf-8")
    escaped = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in escaped)
    return escaped if len(escaped) <= limit else f"{escaped[:limit]}...<{len(escaped)} chars>"
