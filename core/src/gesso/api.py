"""The SDK entry points: :func:`image_generation` and :func:`aimage_generation`.

One call: resolve the model string to its provider and model, check the OpenAI kwargs and the provider's
options (the provider builds the call's target), let the model's family validate everything else and build
the request bodies (nothing is sent if anything is wrong), send each body through the provider's
``gesso_invoke``, parse the responses, and price the result.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime
import logging
import os
import threading
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from gesso import options, params, plugins, redact
from gesso.errors import (
    ContentFilteredError,
    InvalidRequestError,
    ModelLifecycleWarning,
    ProviderError,
    Violation,
)
from gesso.provider import Provider
from gesso.registry import Registry
from gesso.types import (
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


def image_generation(model: str, prompt: str | None = None, **kwargs: Any) -> ImageResponse:
    """Generate images; returns an :class:`~gesso.types.ImageResponse`.

    ``model`` is ``"<provider>/<model id>"`` (``"acme/painter-v1"``); a string with no known provider
    prefix goes to the default provider.

    OpenAI kwargs: ``n``, ``size`` (``"WxH"``), ``quality``, ``response_format`` (``b64_json``, or
    ``url`` for a ``data:`` URL), ``style``, ``user``, ``timeout`` (read timeout, seconds).

    The provider's options (its :attr:`~gesso.provider.Provider.options`: credentials, endpoint, retries...,
    listed in the README for each provider). A string value ``"os.environ/NAME"`` reads environment
    variable ``NAME``.

    Every other kwarg is a parameter of the model, flat (``cfgScale=7``) or nested as the provider spells it
    (``imageGenerationConfig={"cfgScale": 7}``), validated before anything is sent.
    """
    call = _prepare(model, prompt, kwargs)
    bodies = call.prepared.bodies
    if len(bodies) == 1:
        raws = [_invoke(call, bodies[0])]
    else:
        raws = list(_fanout_executor().map(lambda body: _invoke(call, body), bodies))
    return _finish(call, raws)


async def aimage_generation(model: str, prompt: str | None = None, **kwargs: Any) -> ImageResponse:
    """The async form of :func:`image_generation`, with the same arguments.

    Provider calls are natively async when the provider implements ``gesso_ainvoke`` (no thread per call;
    cancelling the task aborts them); otherwise they run on a bounded thread pool.
    """
    call = _prepare(model, prompt, kwargs)
    raws = await asyncio.gather(*(_ainvoke(call, body) for body in call.prepared.bodies))
    return _finish(call, list(raws))


def _prepare(model_string: str, prompt: Any, kwargs: dict[str, Any]) -> _Call:
    registry = plugins.get_registry()
    opts, problems = options.split(kwargs, registry.split_provider(model_string))
    provider, resolved = registry.resolve(model_string, opts)
    model, model_name = resolved.model, resolved.model_name
    if model.lifecycle.status != "active" and model.id not in _lifecycle_warned:
        _warn_lifecycle(model, provider, registry)
    if prompt is not None and not isinstance(prompt, str):
        problems.append(Violation("prompt", f"must be a string (got {type(prompt).__name__})"))
    options.strings(opts, options.OPENAI_STRINGS, problems)
    options.positive("n", opts.get("n"), problems, integer=True, maximum=options.MAX_IMAGES)
    size = None
    raw_size = opts.get("size")
    if raw_size is not None and raw_size != "auto":
        try:
            size = Size.parse(raw_size)
        except InvalidRequestError as exc:
            problems.extend(exc.violations)
    response_format = opts.get("response_format")
    response_format = "b64_json" if response_format is None else response_format
    if response_format not in options.RESPONSE_FORMATS:
        allowed = ", ".join(options.RESPONSE_FORMATS)
        problems.append(Violation("response_format", f"must be one of: {allowed} (got {response_format!r})"))
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
    if problems:
        raise InvalidRequestError(problems, model=model_name)
    provider.check(resolved, opts, registry)
    request = ImageRequest(
        model=model,
        model_name=model_name,
        prompt=prompt,
        n=opts.get("n"),
        size=size,
        quality=opts.get("quality"),
        response_format=response_format,
        style=opts.get("style"),
        user=opts.get("user"),
        params=kwargs,
        target=target,
    )
    hooks = plugins.route(model)
    prepared = hooks.gesso_transform_request(request=request)
    if prepared is None:
        raise ProviderError(
            f"No installed plugin builds requests for model family {model.family!r} "
            f"(registered by {model.distribution})",
            model=model_name,
        )
    if request.user:
        logger.debug("gesso call for user %s to %s", request.user, model_name)
    return _Call(request, prepared, hooks)


_lifecycle_warned: set[str] = set()


def _warn_lifecycle(model: Model, provider: Provider, registry: Registry) -> None:
    """Once per process and model: say that it is Legacy or retired, when, and what to use instead."""
    _lifecycle_warned.add(model.id)
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
    return await pending


def _invoke(call: _Call, body: Mapping[str, Any]) -> RawResponse:
    invocation = _invocation(call, body)
    raw = call.hooks.gesso_invoke(request=call.request, invocation=invocation)
    if raw is None:
        raise ProviderError(
            f"No installed plugin sends requests to provider {invocation.provider!r}", model=call.request.model_name
        )
    return raw


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
    data = [_image_data(img.b64, img.mime_type, request.response_format, img.seed) for p in parsed for img in p.images]
    filtered = sum(p.filtered for p in parsed)
    if not data and filtered:
        notes = "; ".join(dict.fromkeys(w for p in parsed for w in p.warnings))
        raise ContentFilteredError(
            f"The content filter withheld every output ({filtered}){': ' + notes if notes else ''}",
            model=request.model_name,
        )
    sizes = {str(p.size) for p in parsed if p.size is not None}
    masks = [p.mask for p in parsed if p.mask is not None]
    fields = {
        "mask": _image_data(masks[0].b64, masks[0].mime_type, request.response_format) if masks else None,
        "data": data,
        "model": request.model_name,
        "size": sizes.pop() if len(sizes) == 1 else None,
        "filtered": filtered,
        "warnings": tuple(dict.fromkeys((*call.prepared.warnings, *(w for p in parsed for w in p.warnings)))),
    }
    response = ImageResponse(**fields)
    cost = hooks.gesso_calculate_cost(request=request, prepared=call.prepared, response=response)
    return response if cost is None else attrs.evolve(response, cost=round(float(cost), 6))


def _image_data(b64: str, mime_type: str, response_format: str, seed: int | None = None) -> ImageData:
    if response_format == "url":
        return ImageData(url=f"data:{mime_type};base64,{b64}", seed=seed)
    return ImageData(b64_json=b64, seed=seed)


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
