"""The SDK entry points: :func:`image_generation`, :func:`image_edit`, :func:`image_variation` and their
async forms.

One call: resolve the model string to its provider and model, check the OpenAI kwargs and the provider's
options (the provider builds the call's target), let the model's family validate everything else and build
the request bodies (nothing is sent if anything is wrong), send each body through the provider's
``gesso_invoke``, parse the responses, and price the result.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import datetime
import hashlib
import json
import logging
import os
import threading
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from gesso import cache, errors, operations, options, output, params, plugins, pricing, redact, telemetry
from gesso.aio import within
from gesso.boundary import Untrusted, printable, refused, text_problems
from gesso.errors import (
    ContentFilteredError,
    GessoError,
    InvalidRequestError,
    ModelLifecycleWarning,
    PluginHookError,
    ProviderError,
    Violation,
)
from gesso.options import NOT_GIVEN, Background, InputFidelity, Moderation, OutputFormat, ResponseFormat
from gesso.provider import Provider
from gesso.registry import Registry
from gesso.types import (
    GeneratedImage,
    ImageData,
    ImageRequest,
    ImageResponse,
    Invocation,
    Model,
    ParsedResponse,
    PreparedRequest,
    RawResponse,
    Size,
)

logger = logging.getLogger("gesso")

#: Upper bound on provider calls in flight from one process through the async path (and on the
#: connection pools of providers). Override with the GESSO_MAX_CONCURRENCY environment variable.
MAX_CONCURRENCY = int(os.environ.get("GESSO_MAX_CONCURRENCY", "256"))


@attrs.frozen
class _Call:
    request: ImageRequest
    prepared: PreparedRequest
    hooks: Any  # the stage hooks, routed to the plugins that own the model
    plan: output.Output = output.NONE  # the images' format and store
    deadline: float | None = None  # seconds one gesso_invoke may run (Provider.deadline); None: unlimited
    results: Any = None  # the store of answers (``cache=``, or the configured one), if any
    idempotency_key: str | None = None
    identity: str = ""  # where the call goes and as whom (Provider.identity): stored answers are kept apart by it
    pricing: str = "public"  # "deployment" when the call was given prices= (its model priced at them)


def image_generation(
    model: str,
    prompt: str | None = None,
    *,
    n: int | None = NOT_GIVEN,
    size: str | None = NOT_GIVEN,
    quality: str | None = NOT_GIVEN,
    response_format: ResponseFormat | None = NOT_GIVEN,
    style: str | None = NOT_GIVEN,
    user: str | None = NOT_GIVEN,
    output_format: OutputFormat | None = NOT_GIVEN,
    output_compression: int | None = NOT_GIVEN,
    background: Background | None = NOT_GIVEN,
    moderation: Moderation | None = NOT_GIVEN,
    stream: bool | None = NOT_GIVEN,
    partial_images: int | None = NOT_GIVEN,
    input_fidelity: InputFidelity | None = NOT_GIVEN,
    timeout: float | None = NOT_GIVEN,
    snap_size: bool = NOT_GIVEN,
    image_store: str | None = NOT_GIVEN,
    image_url_expiry: int | None = NOT_GIVEN,
    untrusted: Untrusted | None = None,
    **params: Any,
) -> ImageResponse:
    """Generate images; returns an :class:`~gesso.types.ImageResponse`.

    ``model`` is ``"<provider>/<model id>"`` (``"acme/painter-v1"``); a string with no known provider
    prefix goes to the default provider.

    OpenAI's fields: ``n``, ``size`` (``"WxH"``, or ``"auto"``), ``quality``, ``response_format`` (``b64_json``,
    or ``url`` for a ``data:`` URL), ``style``, ``user``, ``output_format`` and ``output_compression``, and
    gpt-image's ``background``, ``moderation``, ``stream``, ``partial_images`` and ``input_fidelity`` (checked,
    never sent: :func:`gesso.options.gpt_image`). gesso's: ``timeout`` (read timeout, seconds), ``snap_size``
    (take the nearest size the model makes, :mod:`gesso.sizes`), ``image_store`` (``file://`` or a plugin's
    scheme; default ``GESSO_IMAGE_STORE``) and ``image_url_expiry``, which make ``url`` the written image's URL
    (:mod:`gesso.output`). Each is checked when the call is made, whatever its declared type; one left out
    (``NOT_GIVEN``) is not part of the call, while ``None`` is a value, as in ``**params``.

    ``params``: the provider's options (its :attr:`~gesso.provider.Provider.options`: credentials, endpoint,
    retries..., listed on the docs' SDK page for each provider), where a string value ``"os.environ/NAME"`` reads
    environment variable ``NAME``; and every other kwarg is a parameter of the model, flat (``cfgScale=7``) or
    nested as the provider spells it (``imageGenerationConfig={"cfgScale": 7}``), validated before anything is
    sent.

    ``untrusted`` (a :class:`gesso.boundary.Untrusted`) carries what arrived in a request from someone else
    (a web form, a proxy's caller): only OpenAI's fields and the model's own parameters are taken from it,
    never an option, and ``os.environ/`` in it is only text. Its fields override kwargs of the same name.
    """
    return _run(_prepare(model, prompt, options.given(params, locals()), untrusted=untrusted))


async def aimage_generation(
    model: str,
    prompt: str | None = None,
    *,
    n: int | None = NOT_GIVEN,
    size: str | None = NOT_GIVEN,
    quality: str | None = NOT_GIVEN,
    response_format: ResponseFormat | None = NOT_GIVEN,
    style: str | None = NOT_GIVEN,
    user: str | None = NOT_GIVEN,
    output_format: OutputFormat | None = NOT_GIVEN,
    output_compression: int | None = NOT_GIVEN,
    background: Background | None = NOT_GIVEN,
    moderation: Moderation | None = NOT_GIVEN,
    stream: bool | None = NOT_GIVEN,
    partial_images: int | None = NOT_GIVEN,
    input_fidelity: InputFidelity | None = NOT_GIVEN,
    timeout: float | None = NOT_GIVEN,
    snap_size: bool = NOT_GIVEN,
    image_store: str | None = NOT_GIVEN,
    image_url_expiry: int | None = NOT_GIVEN,
    untrusted: Untrusted | None = None,
    **params: Any,
) -> ImageResponse:
    """The async form of :func:`image_generation`, with the same arguments.

    Provider calls are natively async when the provider implements ``gesso_ainvoke`` (no thread per call;
    cancelling the task aborts them); otherwise they run on a bounded thread pool.
    """
    return await _arun(_prepare(model, prompt, options.given(params, locals()), untrusted=untrusted))


def image_edit(
    model: str,
    image: Any,
    prompt: str | None = None,
    mask: Any = None,
    *,
    n: int | None = NOT_GIVEN,
    size: str | None = NOT_GIVEN,
    quality: str | None = NOT_GIVEN,
    response_format: ResponseFormat | None = NOT_GIVEN,
    style: str | None = NOT_GIVEN,
    user: str | None = NOT_GIVEN,
    output_format: OutputFormat | None = NOT_GIVEN,
    output_compression: int | None = NOT_GIVEN,
    background: Background | None = NOT_GIVEN,
    moderation: Moderation | None = NOT_GIVEN,
    stream: bool | None = NOT_GIVEN,
    partial_images: int | None = NOT_GIVEN,
    input_fidelity: InputFidelity | None = NOT_GIVEN,
    timeout: float | None = NOT_GIVEN,
    snap_size: bool = NOT_GIVEN,
    image_store: str | None = NOT_GIVEN,
    image_url_expiry: int | None = NOT_GIVEN,
    untrusted: Untrusted | None = None,
    **params: Any,
) -> ImageResponse:
    """Edit an image, as OpenAI's ``images.edit``: ``image`` is one image or a list (bytes, a ``Path``, a file
    object, base64 text or a ``data:`` URL); ``mask`` marks the area to edit in OpenAI's convention (an RGBA
    PNG whose fully transparent pixels are edited) or is already black and white in the family's own. Every
    other kwarg is as in :func:`image_generation`. The model's family maps the edit to its own task (the table
    in docs/edits-and-variations.md); a model that cannot do it is an ``InvalidRequestError`` naming the
    installed models that can."""
    kwargs = options.given(params, locals())
    return _run(_prepare(model, prompt, kwargs, operation="edit", images=image, mask=mask, untrusted=untrusted))


async def aimage_edit(
    model: str,
    image: Any,
    prompt: str | None = None,
    mask: Any = None,
    *,
    n: int | None = NOT_GIVEN,
    size: str | None = NOT_GIVEN,
    quality: str | None = NOT_GIVEN,
    response_format: ResponseFormat | None = NOT_GIVEN,
    style: str | None = NOT_GIVEN,
    user: str | None = NOT_GIVEN,
    output_format: OutputFormat | None = NOT_GIVEN,
    output_compression: int | None = NOT_GIVEN,
    background: Background | None = NOT_GIVEN,
    moderation: Moderation | None = NOT_GIVEN,
    stream: bool | None = NOT_GIVEN,
    partial_images: int | None = NOT_GIVEN,
    input_fidelity: InputFidelity | None = NOT_GIVEN,
    timeout: float | None = NOT_GIVEN,
    snap_size: bool = NOT_GIVEN,
    image_store: str | None = NOT_GIVEN,
    image_url_expiry: int | None = NOT_GIVEN,
    untrusted: Untrusted | None = None,
    **params: Any,
) -> ImageResponse:
    """The async form of :func:`image_edit`, with the same arguments."""
    kwargs = options.given(params, locals())
    call = _prepare(model, prompt, kwargs, operation="edit", images=image, mask=mask, untrusted=untrusted)
    return await _arun(call)


def image_variation(
    model: str,
    image: Any,
    *,
    prompt: str | None = None,
    n: int | None = NOT_GIVEN,
    size: str | None = NOT_GIVEN,
    quality: str | None = NOT_GIVEN,
    response_format: ResponseFormat | None = NOT_GIVEN,
    style: str | None = NOT_GIVEN,
    user: str | None = NOT_GIVEN,
    output_format: OutputFormat | None = NOT_GIVEN,
    output_compression: int | None = NOT_GIVEN,
    background: Background | None = NOT_GIVEN,
    moderation: Moderation | None = NOT_GIVEN,
    stream: bool | None = NOT_GIVEN,
    partial_images: int | None = NOT_GIVEN,
    input_fidelity: InputFidelity | None = NOT_GIVEN,
    timeout: float | None = NOT_GIVEN,
    snap_size: bool = NOT_GIVEN,
    image_store: str | None = NOT_GIVEN,
    image_url_expiry: int | None = NOT_GIVEN,
    untrusted: Untrusted | None = None,
    **params: Any,
) -> ImageResponse:
    """Variations of an image (or of several, where the model takes several), as OpenAI's
    ``images.create_variation``; kwargs as in :func:`image_generation` (``prompt`` may guide the variation
    where the model takes one)."""
    kwargs = options.given(params, locals())
    return _run(_prepare(model, prompt, kwargs, operation="variation", images=image, untrusted=untrusted))


async def aimage_variation(
    model: str,
    image: Any,
    *,
    prompt: str | None = None,
    n: int | None = NOT_GIVEN,
    size: str | None = NOT_GIVEN,
    quality: str | None = NOT_GIVEN,
    response_format: ResponseFormat | None = NOT_GIVEN,
    style: str | None = NOT_GIVEN,
    user: str | None = NOT_GIVEN,
    output_format: OutputFormat | None = NOT_GIVEN,
    output_compression: int | None = NOT_GIVEN,
    background: Background | None = NOT_GIVEN,
    moderation: Moderation | None = NOT_GIVEN,
    stream: bool | None = NOT_GIVEN,
    partial_images: int | None = NOT_GIVEN,
    input_fidelity: InputFidelity | None = NOT_GIVEN,
    timeout: float | None = NOT_GIVEN,
    snap_size: bool = NOT_GIVEN,
    image_store: str | None = NOT_GIVEN,
    image_url_expiry: int | None = NOT_GIVEN,
    untrusted: Untrusted | None = None,
    **params: Any,
) -> ImageResponse:
    """The async form of :func:`image_variation`, with the same arguments."""
    kwargs = options.given(params, locals())
    return await _arun(_prepare(model, prompt, kwargs, operation="variation", images=image, untrusted=untrusted))


def quote(
    model: str,
    prompt: str | None = None,
    *,
    operation: str = "generate",
    image: Any = None,
    mask: Any = None,
    n: int | None = NOT_GIVEN,
    size: str | None = NOT_GIVEN,
    quality: str | None = NOT_GIVEN,
    response_format: ResponseFormat | None = NOT_GIVEN,
    style: str | None = NOT_GIVEN,
    user: str | None = NOT_GIVEN,
    output_format: OutputFormat | None = NOT_GIVEN,
    output_compression: int | None = NOT_GIVEN,
    background: Background | None = NOT_GIVEN,
    moderation: Moderation | None = NOT_GIVEN,
    stream: bool | None = NOT_GIVEN,
    partial_images: int | None = NOT_GIVEN,
    input_fidelity: InputFidelity | None = NOT_GIVEN,
    timeout: float | None = NOT_GIVEN,
    snap_size: bool = NOT_GIVEN,
    image_store: str | None = NOT_GIVEN,
    image_url_expiry: int | None = NOT_GIVEN,
    untrusted: Untrusted | None = None,
    **params: Any,
) -> float | None:
    """The price in USD of a call before it is made (``None`` when the model has no price): the call is
    checked and prepared exactly as :func:`image_generation` (or ``operation`` ``"edit"``/``"variation"``)
    would, then priced as if every image asked for came back. Nothing is sent. For a generation, ``image`` and
    ``mask`` are the model's own parameters of those names, as in :func:`image_generation`."""
    kwargs = options.given(params, locals())
    return price(_prepare_operation(model, prompt, kwargs, operation, image, mask, untrusted))


def prepare(
    model: str,
    prompt: str | None = None,
    *,
    operation: str = "generate",
    image: Any = None,
    mask: Any = None,
    n: int | None = NOT_GIVEN,
    size: str | None = NOT_GIVEN,
    quality: str | None = NOT_GIVEN,
    response_format: ResponseFormat | None = NOT_GIVEN,
    style: str | None = NOT_GIVEN,
    user: str | None = NOT_GIVEN,
    output_format: OutputFormat | None = NOT_GIVEN,
    output_compression: int | None = NOT_GIVEN,
    background: Background | None = NOT_GIVEN,
    moderation: Moderation | None = NOT_GIVEN,
    stream: bool | None = NOT_GIVEN,
    partial_images: int | None = NOT_GIVEN,
    input_fidelity: InputFidelity | None = NOT_GIVEN,
    timeout: float | None = NOT_GIVEN,
    snap_size: bool = NOT_GIVEN,
    image_store: str | None = NOT_GIVEN,
    image_url_expiry: int | None = NOT_GIVEN,
    untrusted: Untrusted | None = None,
    **params: Any,
) -> _Call:
    """A call checked and prepared as :func:`image_generation` (``operation`` ``"edit"``/``"variation"``: as
    :func:`image_edit`/:func:`image_variation`) would, not sent: :func:`price` it, then :func:`asend` it (once
    or several times), so a service that prices a call before sending it prepares it once."""
    kwargs = options.given(params, locals())
    return _prepare_operation(model, prompt, kwargs, operation, image, mask, untrusted)


def _prepare_operation(
    model: str, prompt: Any, kwargs: dict[str, Any], operation: str, image: Any, mask: Any, untrusted: Untrusted | None
) -> _Call:
    if operation == "generate":  # as image_generation takes them: a family's own parameters of those names
        kwargs.update({k: v for k, v in (("image", image), ("mask", mask)) if v is not None})
        image = mask = None
    return _prepare(model, prompt, kwargs, operation=operation, images=image, mask=mask, untrusted=untrusted)


async def asend(call: _Call) -> ImageResponse:
    """Send a call :func:`prepare` made (async)."""
    return await _arun(call)


def price(call: _Call) -> float | None:
    """The price in USD of a prepared call if every image asked for comes back (``None``: the model has none)."""
    size = call.prepared.size
    asked = ImageResponse(
        data=[ImageData(b64_json="") for _ in range(call.prepared.requested)],
        model=call.request.model_name,
        size=str(size) if size is not None else None,
    )
    cost = call.hooks.gesso_calculate_cost(request=call.request, prepared=call.prepared, response=asked)
    return None if cost is None else round(float(cost), 6)


def cache_key(call: _Call, scope: str = "") -> str | None:
    """A hash of a prepared call exactly as its provider would be sent it (the model as given, with its provider
    and any routing prefix; every body) and of what its images are made into, within ``scope``: two calls with
    the same key may be answered with the same stored images. None when a cache must not answer it: a body that
    does not fix its seed (the provider picks one at random), or images written to a store (their URLs are the
    store's, and may expire)."""
    if not call.prepared.seeded or call.plan.store is not None:
        return None
    try:
        bodies = [params.to_json(body) for body in call.prepared.bodies]
    except (ValueError, TypeError, RecursionError):
        return None
    plan = (call.request.response_format, call.plan.encode, call.plan.quality, call.plan.requested)
    digest = hashlib.sha256()
    where = call.identity.encode("utf-8", "surrogatepass")
    for part in (scope.encode("utf-8", "surrogatepass"), where, call.request.model_name.encode(), repr(plan).encode(),
                 *bodies):  # fmt: skip
        digest.update(len(part).to_bytes(8, "big") + part)
    return digest.hexdigest()


def _answers_store(kwargs: dict[str, Any]) -> tuple[Any, str | None]:
    """``cache=`` (else the configured store) and ``idempotency_key=``, taken out of a call's kwargs and checked."""
    results = kwargs.pop("cache", None)
    key = kwargs.pop("idempotency_key", None)
    if isinstance(results, str):  # a directory, or a plugin's URL (s3://bucket/prefix)
        try:
            results = cache.open_store(results)
        except ValueError as exc:
            raise InvalidRequestError(f"cache: {exc}", param="cache") from None
    if results is not None and not all(callable(getattr(results, name, None)) for name in ("get", "put")):
        raise InvalidRequestError("cache: must be a store of answers, such as gesso.cache.DiskCache(path), a "
                                  "directory or an s3:// URL", param="cache")  # fmt: skip
    if key is not None and not (isinstance(key, str) and 1 <= len(key) <= 255 and all(" " <= c <= "~" for c in key)):
        raise InvalidRequestError("idempotency_key: 1 to 255 printable ASCII characters", param="idempotency_key")
    if results is None:
        results = cache.configured()
    if key is not None and results is None:
        results = cache.process_store()
    return results, key


def _asked(call: _Call) -> str:
    """A hash of what a call asks for, as given (its bodies may hold seeds chosen at random): an idempotency
    key's repeat must ask for the same."""
    request = call.request

    asked = {"model": request.model_name, "operation": request.operation, "prompt": request.prompt, "n": request.n,
             "size": str(request.size) if request.size else None, "quality": request.quality,
             "response_format": request.response_format, "style": request.style, "user": request.user,
             "params": request.params, "images": [cache.digest(image) for image in request.images],
             "mask": None if request.mask is None else cache.digest(request.mask),
             "plan": repr((call.plan.encode, call.plan.quality, call.plan.requested))}  # fmt: skip
    return cache.digest(json.dumps(asked, sort_keys=True, default=repr))


def _entry(call: _Call) -> tuple[str, str | None] | None:
    """Where a call's answer is kept in its store, and the hash a repeat must match (idempotency keys); None when
    the call is not kept (no store, or a cached call whose bodies do not fix their seed)."""
    if call.results is None:
        return None
    if call.idempotency_key is not None:
        return cache.digest(f"idempotency\x00{call.identity}\x00{call.idempotency_key}"), _asked(call)
    key = cache_key(call)
    return (key, None) if key is not None else None


def _replayed(call: _Call, entry: tuple[str, str | None], data: bytes | None) -> ImageResponse | None:
    """The stored answer (costing nothing now), or None; a repeat of an idempotency key that asks for something
    else is refused."""
    if data is None:
        return None
    try:
        stored = json.loads(data)
        response = ImageResponse.from_dict(stored["response"])
    except (ValueError, KeyError, TypeError, errors.GessoError):
        return None  # unreadable: run the call again
    if entry[1] is not None and stored.get("asked") != entry[1]:
        raise InvalidRequestError(
            f"idempotency_key {call.idempotency_key!r} was used with another request; a retry must ask for the "
            "same, or use a new key", model=call.request.model_name, param="idempotency_key",
            code="idempotency_key_reused",
        )  # fmt: skip
    why = "the answer to this idempotency key" if entry[1] is not None else "an identical seeded call's answer"
    paid = f"{response.cost:.6f} USD" if response.cost is not None else "an unknown price"
    note = f"served from the cache: {why}, stored earlier (it cost {paid} then; no call was made now)"
    return attrs.evolve(response, cost=0.0 if response.cost is not None else None, warnings=(*response.warnings, note))


def _stored(response: ImageResponse, entry: tuple[str, str | None]) -> bytes:
    return json.dumps({"asked": entry[1], "response": response.to_dict()}).encode()


def _run(call: _Call) -> ImageResponse:
    entry = _entry(call)
    if entry is not None:
        replayed = _replayed(call, entry, call.results.get(entry[0]))
        if replayed is not None:
            return replayed
    response = _send(call)
    if entry is not None:
        call.results.put(entry[0], _stored(response, entry))
    return response


async def _arun(call: _Call) -> ImageResponse:
    entry = _entry(call)
    if entry is not None:
        replayed = _replayed(call, entry, await asyncio.to_thread(call.results.get, entry[0]))
        if replayed is not None:
            return replayed
    response = await _asend(call)
    if entry is not None:
        await asyncio.to_thread(call.results.put, entry[0], _stored(response, entry))
    return response


def _send(call: _Call) -> ImageResponse:
    bodies = call.prepared.bodies
    with telemetry.attempt(call) as record:  # a client span when OpenTelemetry is set up
        if len(bodies) == 1:
            raws = [_invoke(call, bodies[0])]
        else:
            raws = list(_fanout_executor().map(lambda body: _invoke(call, body), bodies))
        response = _finish(call, raws)
        record.done(response)
        return response


async def _asend(call: _Call) -> ImageResponse:
    bodies = call.prepared.bodies
    with telemetry.attempt(call) as record:  # a client span when OpenTelemetry is set up
        if len(bodies) == 1:  # awaited in this task: no second task for the one call
            response = await _afinish(call, [await _ainvoke(call, bodies[0])])
        else:
            raws = await asyncio.gather(*(_ainvoke(call, body) for body in bodies))
            response = await _afinish(call, list(raws))
        record.done(response)
        return response


def _prepare(
    model_string: str,
    prompt: Any,
    kwargs: dict[str, Any],
    *,
    operation: str = "generate",
    images: Any = None,
    mask: Any = None,
    untrusted: Untrusted | None = None,
) -> _Call:
    results, idempotency_key = _answers_store(kwargs)
    prices, problems = pricing.parse(kwargs.pop("prices", None))  # (a program's or a deployment's, never a caller's)
    registry = plugins.get_registry()
    opts, more = options.split(kwargs, registry.split_provider(model_string))
    problems += more
    provider, resolved = registry.resolve(model_string, opts)
    model, model_name = resolved.model, resolved.model_name
    if prices is not None:
        model, more = pricing.apply(model, prices)
        problems += more
    if untrusted is not None:  # the request's own fields: data (never the environment), and only what is allowed
        found = refused(untrusted, model, provider)
        if found:
            raise InvalidRequestError(found, model=model_name, code="not_allowed")
        problems += text_problems(untrusted)
        call_options = options.names(provider)
        for key, value in untrusted.fields.items():
            (opts if key in call_options else kwargs)[key] = value
    kwargs, opts = _as_sent(kwargs, problems), _as_sent(opts, problems)  # every check sees the values as sent
    if operation != "generate":
        _check_operation(registry, model, model_name, operation, mask)
        images, mask = operations.inputs(images, mask, problems)
    if model.lifecycle.status != "active" and model.id not in _lifecycle_warned:
        _warn_lifecycle(model, provider, registry)
    if prompt is not None and not isinstance(prompt, str):
        problems.append(Violation("prompt", f"must be a string (got {type(prompt).__name__})"))
    options.strings(opts, options.OPENAI_STRINGS, problems)
    options.positive("n", opts.get("n"), problems, integer=True, maximum=options.MAX_IMAGES)
    notes = options.gpt_image(opts, model_name, problems, lambda: _able(registry, "background_removal"))
    size = None
    raw_size = opts.get("size")
    if raw_size is not None and raw_size != "auto":  # "auto": the model's default, as OpenAI's
        try:
            size = Size.parse(raw_size)
        except InvalidRequestError as exc:
            problems.extend(exc.violations)
    response_format = opts.get("response_format")
    response_format = "b64_json" if response_format is None else response_format
    if response_format not in options.RESPONSE_FORMATS:
        allowed = ", ".join(options.RESPONSE_FORMATS)
        got = params.short(response_format)
        problems.append(Violation("response_format", f"must be one of: {allowed} (got {got})"))
    options.positive("timeout", opts.get("timeout"), problems, maximum=options.MAX_SECONDS)
    timeout = opts.get("timeout") or model.timeout
    redact.remember(provider.secrets(opts))
    redact.install(provider.loggers)
    target = provider.target(
        resolved,
        opts,
        timeout=float(timeout) if not problems and isinstance(timeout, (int, float)) else None,
        problems=problems,
    )
    plan = output.plan(opts, kwargs, model, response_format, problems)
    if problems:
        raise InvalidRequestError(problems, model=model_name)
    provider.check(resolved, opts, registry)
    request = ImageRequest(
        model=model,
        model_name=model_name,
        prompt=prompt,
        n=opts.get("n"),
        size=size,
        quality=None if opts.get("quality") == "auto" else opts.get("quality"),  # "auto": the model's default
        response_format=response_format,
        style=opts.get("style"),
        user=opts.get("user"),
        params=kwargs,
        target=target,
        operation=operation,
        images=images or (),
        mask=mask,
        snap_size=opts.get("snap_size") is True,
    )
    hooks = plugins.route(model)
    prepared = hooks.gesso_transform_request(request=request)
    if prepared is None:
        raise ProviderError(
            f"No installed plugin builds requests for model family {model.family!r} "
            f"(registered by {model.distribution})",
            model=model_name,
        )
    if notes:
        prepared = attrs.evolve(prepared, warnings=(*notes, *prepared.warnings))
    if request.user:
        logger.debug("gesso call for user %s to %s", printable(request.user), model_name)
    priced = "deployment" if prices is not None else "public"
    identity = provider.identity(target)
    return _Call(request, prepared, hooks, plan, provider.deadline(target), results, idempotency_key, identity, priced)


def _as_sent(values: dict[str, Any], problems: list[Violation]) -> dict[str, Any]:
    """:func:`gesso.params.as_sent` of each value; one nested too deeply to walk is a violation naming it."""
    sent: dict[str, Any] = {}
    for key, value in values.items():
        try:
            sent[key] = params.as_sent(value)
        except RecursionError:
            problems.append(Violation(key, "nested too deeply"))
    return sent


def _check_operation(registry: Registry, model: Model, model_name: str, operation: str, mask: Any) -> None:
    """An edit or variation reaches only a model that declares it (an edit with a mask: ``edit_mask``)."""
    needed = "edit_mask" if operation == "edit" and mask is not None else operation
    if needed in model.capabilities:
        return
    what = {"edit": "an image edit", "edit_mask": "an image edit with a mask", "variation": "an image variation"}
    able = _able(registry, needed)
    hint = f"installed models that can: {', '.join(able)}" if able else "no installed model can"
    param = "mask" if needed == "edit_mask" else "model"
    raise InvalidRequestError(f"this model cannot do {what[needed]} ({hint})", model=model_name, param=param)


def _able(registry: Registry, capability: str) -> list[str]:
    """The installed models, not retired, that have ``capability``, as callers name them."""
    return sorted(
        {
            registry.provider_of(m).usable_ids(m)[0] if m.provider in registry.providers else m.id
            for m in registry.models
            if capability in m.capabilities and m.lifecycle.status != "eol"
        }
    )


_lifecycle_warned: set[str] = set()


def _warn_lifecycle(model: Model, provider: Provider, registry: Registry) -> None:
    """Once per process and model: say that it is Legacy or retired, when, and what to use instead
    (``GESSO_NO_LIFECYCLE_WARNINGS=1`` silences it)."""
    _lifecycle_warned.add(model.id)
    if os.environ.get("GESSO_NO_LIFECYCLE_WARNINGS", "").strip() not in ("", "0"):
        return
    life = model.lifecycle
    when = life.end_of_life
    where = provider.lifecycle_status(model)
    if life.status == "eol":
        status = f"has reached its end of life {where}{f' ({when})' if when else ''}; calls are expected to fail"
    elif when and when < datetime.date.today().isoformat():
        status = f"is a Legacy model {where} whose announced end of life ({when}) has passed; calls may fail"
    else:
        status = f"is a Legacy model {where}{f', retiring on {when}' if when else ''}"
    source = f" (source: {life.source})" if life.source else ""
    advice = provider.advice(model, registry)
    warnings.warn(f"{model.id} {status}{source}.{' ' + advice if advice else ''}", ModelLifecycleWarning, stacklevel=4)


def _invocation(call: _Call, body: Mapping[str, Any]) -> Invocation:
    try:
        payload = params.to_json(body)
    except (ValueError, TypeError, RecursionError) as exc:  # a family sent a body it had not checked
        raise InvalidRequestError(f"parameters must be valid JSON: {exc}", model=call.request.model_name) from exc
    return Invocation(provider=call.request.model.provider or "", target=call.request.target, body=payload)


async def _ainvoke(call: _Call, body: Mapping[str, Any]) -> RawResponse:
    invocation = _invocation(call, body)
    pending = call.hooks.gesso_ainvoke(request=call.request, invocation=invocation)
    if pending is None:  # the provider has no async transport: its sync one, on a thread
        return await asyncio.get_running_loop().run_in_executor(_async_executor(), _invoke, call, body)
    try:
        return await (pending if call.deadline is None else within(pending, call.deadline))
    except GessoError:
        raise
    except (TimeoutError, asyncio.TimeoutError) as exc:  # the deadline: the hook's coroutines were cancelled
        cancelled = exc.__cause__ or exc.__context__
        raise _hung(call, "gesso_ainvoke", cancelled) from None
    except Exception as exc:  # a wrapper's awaitable (the hooks' own are guarded)
        raise plugins.hook_failed("gesso_ainvoke", exc) from exc


def _invoke(call: _Call, body: Mapping[str, Any]) -> RawResponse:
    invocation = _invocation(call, body)
    raw: RawResponse | None
    if call.deadline is None or call.hooks.own_invoke:  # the provider's own transport bounds its calls
        raw = call.hooks.gesso_invoke(request=call.request, invocation=invocation)
    else:
        raw = _within_deadline(call, lambda: call.hooks.gesso_invoke(request=call.request, invocation=invocation))
    if raw is None:
        raise ProviderError(
            f"No installed plugin sends requests to provider {invocation.provider!r}", model=call.request.model_name
        )
    return raw


def _within_deadline(call: _Call, invoke: Any) -> Any:
    """``invoke()`` on a thread of its own, waited for at most the call's deadline from when it starts: a hook
    that hangs fails the call (its thread is abandoned) rather than blocking the caller for ever."""
    started = threading.Event()
    thread: list[int] = []

    def run() -> Any:
        thread.append(threading.get_ident())
        started.set()
        return invoke()

    future = _executor("hooks").submit(contextvars.copy_context().run, run)
    assert call.deadline is not None
    if not started.wait(call.deadline) and future.cancel():
        raise PluginHookError(
            f"gesso_invoke could not start within {call.deadline:g} s: every hook thread is held by a call that "
            "hangs", plugin=None, hook="gesso_invoke", model=call.request.model_name,
        )  # fmt: skip
    try:
        return future.result(timeout=call.deadline)
    except concurrent.futures.TimeoutError:
        raise _hung(call, "gesso_invoke", thread[0] if thread else None) from None


def _hung(call: _Call, hook: str, where: int | BaseException | None) -> PluginHookError:
    plugin = plugins.culprit(hook, where)
    who = f"The gesso plugin {plugin!r}" if plugin else "A gesso plugin"
    return PluginHookError(
        f"{who} hangs in {hook}: the call did not return within its deadline of {call.deadline:g} s (its timeouts "
        "and retries) and was abandoned", plugin=plugin, hook=hook, model=call.request.model_name,
    )  # fmt: skip


def _finish(call: _Call, raws: Sequence[RawResponse]) -> ImageResponse:
    hooks = call.hooks
    request = call.request
    parsed: list[ParsedResponse] = []
    for raw in raws:
        result = hooks.gesso_parse_response(request=request, prepared=call.prepared, response=raw)
        if result is None:
            raise ProviderError(
                f"No installed plugin parses responses of model family {request.model.family!r}",
                model=request.model_name,
            )
        parsed.append(result)
    images = [img for p in parsed for img in p.images]
    if call.plan.blocking and len(images) > 1:  # encoded and written side by side
        data = list(_fanout_executor().map(lambda img: _image_data(call, img), images))
    else:
        data = [_image_data(call, img) for img in images]
    texts = [p.text for p in parsed for _ in p.images]  # the text a model wrote beside its image: its revision
    data = [attrs.evolve(item, revised_prompt=text) if text else item for item, text in zip(data, texts)]
    filtered = sum(p.filtered for p in parsed)
    if not data and filtered:
        notes = "; ".join(dict.fromkeys(w for p in parsed for w in p.warnings))
        raise ContentFilteredError(
            f"The content filter withheld every output ({filtered}){': ' + notes if notes else ''}",
            model=request.model_name,
        )
    sizes = {str(p.size) for p in parsed if p.size is not None}
    masks = [p.mask for p in parsed if p.mask is not None]
    response = ImageResponse(
        mask=_image_data(call, masks[0], encode=False) if masks else None,
        data=data,
        model=request.model_name,
        size=sizes.pop() if len(sizes) == 1 else None,
        output_format=output.reported(call.plan, images),
        filtered=filtered,
        warnings=tuple(dict.fromkeys((*call.prepared.warnings, *(w for p in parsed for w in p.warnings)))),
        usage=_usage(parsed),
    )
    cost = hooks.gesso_calculate_cost(request=request, prepared=call.prepared, response=response)
    if cost is None:
        if not pricing.has_price(request.model):  # unknown, never 0: said once a model
            pricing.warn_unpriced(request.model)
        return response
    return attrs.evolve(response, cost=round(float(cost), 6), pricing=call.pricing)


def _usage(parsed: Sequence[ParsedResponse]) -> dict[str, int] | None:
    """The tokens the calls' answers counted, summed, as OpenAI's gpt-image responses say them (None: uncounted)."""
    counted = [p.usage for p in parsed if p.usage is not None]
    if not counted or len(counted) < len(parsed):  # a sum missing an answer's tokens would under-count its cost
        return None
    tokens_in = sum(int(u.get("input_tokens", 0)) for u in counted)
    tokens_out = sum(int(u.get("output_tokens", 0)) for u in counted)
    return {"input_tokens": tokens_in, "output_tokens": tokens_out, "total_tokens": tokens_in + tokens_out}


async def _afinish(call: _Call, raws: Sequence[RawResponse]) -> ImageResponse:
    """:func:`_finish` for the async path, on a thread when it encodes images or writes them to a store
    (Pillow, an upload), which would block the event loop."""
    if not call.plan.blocking:
        return _finish(call, raws)
    return await asyncio.get_running_loop().run_in_executor(_async_executor(), _finish, call, raws)


def _image_data(call: _Call, image: GeneratedImage, *, encode: bool = True) -> ImageData:
    """One image as the response carries it: in the planned format (a mask stays as the model sent it),
    then inline, as a ``data:`` URL, or written to the call's image store."""
    if encode:
        image = output.encode(call.plan, image, model=call.request.model_name)
    if call.request.response_format != "url":
        return ImageData(b64_json=image.b64, seed=image.seed)
    if call.plan.store is None:
        return ImageData(url=f"data:{image.mime_type};base64,{image.b64}", seed=image.seed)
    return ImageData(url=output.put(call.plan, image), seed=image.seed)


_executors: dict[str, concurrent.futures.ThreadPoolExecutor] = {}
_executor_lock = threading.Lock()


def _executor(name: str) -> concurrent.futures.ThreadPoolExecutor:
    pool = _executors.get(name)
    if pool is None:
        with _executor_lock:
            pool = _executors.get(name)
            if pool is None:
                pool = concurrent.futures.ThreadPoolExecutor(MAX_CONCURRENCY, thread_name_prefix=f"gesso-{name}")
                _executors[name] = pool
    return pool


def _async_executor() -> concurrent.futures.ThreadPoolExecutor:
    return _executor("async")


def _fanout_executor() -> concurrent.futures.ThreadPoolExecutor:
    # separate from the async pool, so a fan-out started inside an async call cannot starve it
    return _executor("fanout")
