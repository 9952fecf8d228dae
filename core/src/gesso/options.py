"""The call-level kwargs of ``image_generation`` that are not the model's: OpenAI's parameters, gesso's
output options, and the options of the model's provider (:attr:`gesso.provider.Provider.options`).

Every other kwarg is a provider parameter of the model, validated by its family. A kwarg that looks like
another SDK's habit (``extra_body``, ``metadata``, or a near-miss of a provider option) is refused with what
to write instead, never passed to the family to be misread.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Literal, get_args

from gesso.errors import Violation
from gesso.params import short

if TYPE_CHECKING:
    from gesso.provider import Provider

#: OpenAI's values of its fields that have a fixed set (OpenAI API reference, Images, "Create image"): the types of
#: the SDK's keyword parameters, and what gesso checks a value against
ResponseFormat = Literal["b64_json", "url"]
OutputFormat = Literal["png", "jpeg", "webp"]
Background = Literal["auto", "opaque", "transparent"]
Moderation = Literal["auto", "low"]
InputFidelity = Literal["high", "low"]

RESPONSE_FORMATS: tuple[str, ...] = get_args(ResponseFormat)
#: OpenAI's gpt-image fields that gesso maps itself rather than sending them (:func:`gpt_image`)
GPT_IMAGE_KWARGS = ("background", "moderation", "stream", "partial_images", "input_fidelity")
#: OpenAI's image parameters (besides ``model``, ``prompt``, ``output_format`` and ``output_compression``)
OPENAI_KWARGS = ("n", "size", "quality", "response_format", "style", "user", "timeout", *GPT_IMAGE_KWARGS)
OPENAI_STRINGS = frozenset(("quality", "style", "user", "background", "moderation", "input_fidelity"))
#: gesso's own request fields: ``snap_size=True`` takes the nearest size the model makes (:mod:`gesso.sizes`)
REQUEST_KWARGS = ("snap_size",)
#: gesso's output options (:mod:`gesso.output`). ``output_format`` is not among them: it is the model's own
#: parameter when its body has one, and only otherwise gesso's (``output.plan`` takes it then).
OUTPUT_KWARGS = ("output_compression", "image_store", "image_url_expiry")
ENV_PREFIX = "os.environ/"
#: the call options a proxy deployment may let its callers set (``model_info.caller_params``), besides its
#: provider's :attr:`~gesso.provider.Provider.grantable`
GRANTABLE = ("timeout", "image_url_expiry")

#: Upper bounds: a day for any wait, and images per call (each family has its own, lower limit; this one
#: stops absurd values before any family builds bodies).
MAX_SECONDS = 86_400
MAX_IMAGES = 1000

#: Names other SDKs use, and what to write in gesso instead.
HABITS = {
    "extra_body": "pass provider parameters as keyword arguments themselves (e.g. cfgScale=7): gesso validates "
    "each one against the model's schema; nothing is forwarded unread",
    "metadata": "gesso sends nothing but the model's own parameters to the provider, so there is nowhere for "
    "metadata to go; keep it in your application (user= is logged at debug level)",
    "custom_llm_provider": "gesso takes the provider from the model string: model='<provider>/<model id>'",
    "drop_params": "gesso never drops parameters silently: leave out the ones the model does not take (the error "
    "names them)",
}


#: The kwargs the SDK's entry points (:mod:`gesso.api`) name as typed keyword parameters, so that an IDE completes
#: them: OpenAI's fields and gesso's request and output options. Provider options and the model's own parameters
#: stay ``**params``.
NAMED_KWARGS = (*OPENAI_KWARGS, "output_format", *REQUEST_KWARGS, *OUTPUT_KWARGS)


class _NotGiven:
    """The default of a named kwarg: the caller did not write it (``None`` is a value the checks see, as when it
    came in ``**kwargs``)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "NOT_GIVEN"


#: typed ``Any`` so that it is every named kwarg's default whatever the parameter's type
NOT_GIVEN: Any = _NotGiven()


def given(params: dict[str, Any], named: Mapping[str, Any]) -> dict[str, Any]:
    """A call's kwargs as one dict, as if every one came in ``**kwargs``: ``params`` (the entry point's own
    ``**params`` dict, updated in place) with each of :data:`NAMED_KWARGS` that ``named`` (the entry point's
    ``locals()``) holds a value for."""
    for name in NAMED_KWARGS:
        value = named[name]
        if value is not NOT_GIVEN:
            params[name] = value
    return params


def names(provider: Provider | None) -> frozenset[str]:
    """The call-level kwargs of a call to ``provider``'s models: OpenAI's, gesso's output options, its options."""
    return frozenset(
        (*OPENAI_KWARGS, *REQUEST_KWARGS, *OUTPUT_KWARGS, *(provider.options if provider is not None else ()))
    )


def grantable(provider: Provider | None) -> frozenset[str]:
    """The call options a service may leave to its callers (:data:`GRANTABLE` and the provider's own)."""
    return frozenset((*GRANTABLE, *(provider.grantable if provider is not None else ())))


def split(kwargs: dict[str, Any], provider: Provider | None) -> tuple[dict[str, Any], list[Violation]]:
    """Take the call-level kwargs out of ``kwargs`` (left holding the model's parameters), reading
    ``os.environ/NAME`` values; refuse other SDKs' names with what to write instead."""
    problems: list[Violation] = []
    taken = names(provider)
    opts = {key: from_env(key, kwargs.pop(key), problems) for key in [k for k in kwargs if k in taken]}
    if "output_format" in kwargs:  # the model's own parameter or gesso's (gesso.output.plan): a kwarg all the same
        kwargs["output_format"] = from_env("output_format", kwargs["output_format"], problems)
    for key in [k for k in kwargs if isinstance(k, str)]:
        advice = HABITS.get(key) or (provider.habit(key) if provider is not None else None)
        if advice:
            kwargs.pop(key)
            problems.append(Violation(key, f"is not a gesso parameter: {advice}"))
    return opts, problems


def from_env(key: str, value: Any, problems: list[Violation]) -> Any:
    """litellm's convention: ``"os.environ/NAME"`` means the value of environment variable NAME."""
    if isinstance(value, str) and value.startswith(ENV_PREFIX):
        name = value[len(ENV_PREFIX) :]
        found = os.environ.get(name)
        if not found:
            problems.append(Violation(key, f"environment variable {name} (from {value!r}) is not set"))
        return found
    return value


def positive(
    key: str, value: Any, problems: list[Violation], *, integer: bool = False, zero: bool = False, maximum: float
) -> None:
    """``value`` is None, or a finite number (an int, with ``integer``) above 0 (or 0, with ``zero``) and at
    most ``maximum``."""
    if value is None:
        return
    kinds = int if integer else (int, float)
    what = ("a non-negative" if zero else "a positive") + (" integer" if integer else " number of seconds")
    if isinstance(value, bool) or not isinstance(value, kinds) or (isinstance(value, float) and math.isnan(value)):
        problems.append(Violation(key, f"must be {what} (got {short(value)})"))
    elif value < 0 or (value == 0 and not zero) or value > maximum:
        problems.append(Violation(key, f"must be {what}, at most {maximum:,} (got {short(value)})"))


def strings(opts: Mapping[str, Any], names: Iterable[str], problems: list[Violation]) -> None:
    """Each of ``names`` given in ``opts`` is a string."""
    for key in names:
        value = opts.get(key)
        if value is not None and not isinstance(value, str):
            problems.append(Violation(key, f"must be a string (got {type(value).__name__})"))


BACKGROUNDS: tuple[str, ...] = get_args(Background)
MODERATIONS: tuple[str, ...] = get_args(Moderation)


def gpt_image(opts: Mapping[str, Any], model: str, problems: list[Violation], removers: Any) -> list[str]:
    """Check OpenAI's gpt-image fields, none of which is sent: ``background`` "auto" or "opaque" (every image
    gesso's models make is opaque; "transparent" is refused, naming the installed models that remove a
    background, which ``removers()`` lists), ``moderation`` (the provider's own filters apply: "low" is
    accepted with a warning saying so), ``stream`` and ``partial_images`` (no model streams: false and 0
    only) and ``input_fidelity`` (no model has it). Returns the warnings for the response."""
    notes: list[str] = []
    background = opts.get("background")
    if background == "transparent":
        able = removers()
        how = (
            f"remove the background in an edit with one of the installed models that can: {', '.join(able)}"
            if able
            else "no installed model removes a background"
        )
        problems.append(Violation("background", f"{model} makes opaque images only (auto, opaque); {how}"))
    elif background is not None and background not in BACKGROUNDS:
        problems.append(Violation("background", f"must be one of: {', '.join(BACKGROUNDS)} (got {short(background)})"))
    moderation = opts.get("moderation")
    if moderation == "low":
        notes.append(f"moderation low was not applied: {model}'s provider filters content by its own rules")
    elif moderation is not None and moderation not in MODERATIONS:
        problems.append(Violation("moderation", f"must be one of: {', '.join(MODERATIONS)} (got {short(moderation)})"))
    stream = opts.get("stream")
    if stream is True:
        problems.append(Violation("stream", f"{model} returns its images whole, in one response: leave stream out"))
    elif stream is not None and stream is not False:
        problems.append(Violation("stream", f"must be true or false (got {short(stream)})"))
    partial = opts.get("partial_images")
    if isinstance(partial, bool) or not (partial is None or isinstance(partial, int)) or not 0 <= (partial or 0) <= 3:
        problems.append(Violation("partial_images", f"must be an integer from 0 to 3 (got {short(partial)})"))
    elif partial:
        problems.append(
            Violation("partial_images", f"{model} cannot stream partial images: leave partial_images out, or 0")
        )
    if opts.get("input_fidelity") is not None:
        problems.append(
            Violation("input_fidelity", f"{model} has no input fidelity setting (OpenAI's gpt-image-1 edits have it)")
        )
    if "snap_size" in opts and not isinstance(opts["snap_size"], bool):
        problems.append(Violation("snap_size", f"must be true or false (got {short(opts['snap_size'])})"))
    return notes
