"""The SDK entry points: :func:`image_generation` and :func:`aimage_generation`.

One call: resolve the model to its family plugin, parse the OpenAI and transport kwargs, let the
family validate everything and build the provider bodies (nothing is sent if anything is wrong), send
each body through the transport, parse the responses, and price the result.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import os
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from gesso import plugins
from gesso.errors import InvalidRequestError, ProviderError, Violation
from gesso.types import (
    AwsCredentials,
    ImageData,
    ImageRequest,
    ImageResponse,
    Invocation,
    ParsedResponse,
    PreparedRequest,
    RawResponse,
    Size,
    Target,
)

logger = logging.getLogger("gesso")

RESPONSE_FORMATS = ("b64_json", "url")

#: Upper bound on provider calls in flight from one process through the async path (and on the
#: connection pool of each Bedrock client). Override with the GESSO_MAX_CONCURRENCY environment variable.
MAX_CONCURRENCY = int(os.environ.get("GESSO_MAX_CONCURRENCY", "256"))


@attrs.frozen
class _Call:
    request: ImageRequest
    prepared: PreparedRequest


def image_generation(
    model: str,
    prompt: str | None = None,
    *,
    n: int | None = None,
    size: str | None = None,
    quality: str | None = None,
    response_format: str | None = None,
    style: str | None = None,
    user: str | None = None,
    timeout: float | None = None,
    model_id: str | None = None,
    aws_access_key_id: str | None = None,
    aws_secret_access_key: str | None = None,
    aws_session_token: str | None = None,
    aws_region_name: str | None = None,
    aws_profile_name: str | None = None,
    aws_bedrock_runtime_endpoint: str | None = None,
    **params: Any,
) -> ImageResponse:
    """Generate images with a Bedrock model; returns an :class:`~gesso.types.ImageResponse`.

    ``model`` picks the model family (``"bedrock/amazon.nova-canvas-v1:0"``); ``model_id`` overrides
    what is invoked (an inference-profile or provisioned-model ARN). OpenAI kwargs: ``n``, ``size``
    (``"WxH"``), ``quality``, ``response_format`` (``b64_json`` or ``url``, which returns a ``data:``
    URL), ``style``, ``user``, ``timeout`` (seconds). Credentials and endpoint use litellm's ``aws_*``
    names. Every other kwarg is a provider parameter, flat (``cfgScale=7``) or nested as Bedrock
    spells it (``imageGenerationConfig={"cfgScale": 7}``), validated before anything is sent.
    """
    call = _prepare(
        model,
        prompt,
        dict(
            n=n,
            size=size,
            quality=quality,
            response_format=response_format,
            style=style,
            user=user,
            timeout=timeout,
            model_id=model_id,
            aws_access_key_id=aws_access_key_id,
            aws_secret_access_key=aws_secret_access_key,
            aws_session_token=aws_session_token,
            aws_region_name=aws_region_name,
            aws_profile_name=aws_profile_name,
            aws_bedrock_runtime_endpoint=aws_bedrock_runtime_endpoint,
        ),
        params,
    )
    bodies = call.prepared.bodies
    if len(bodies) == 1:
        raws = [_invoke(call, bodies[0])]
    else:
        raws = list(_fanout_executor().map(lambda body: _invoke(call, body), bodies))
    return _finish(call, raws)


async def aimage_generation(model: str, prompt: str | None = None, **kwargs: Any) -> ImageResponse:
    """The async form of :func:`image_generation`, with the same arguments.

    Provider calls run on a bounded thread pool sized to the connection pool, so many concurrent
    calls are in flight at once rather than queued behind a small default executor.
    """
    known = {k: kwargs.pop(k) for k in _CALL_KWARGS if k in kwargs}
    call = _prepare(model, prompt, known, kwargs)
    loop = asyncio.get_running_loop()
    executor = _async_executor()
    raws = await asyncio.gather(*(loop.run_in_executor(executor, _invoke, call, body) for body in call.prepared.bodies))
    return _finish(call, list(raws))


_CALL_KWARGS = (
    "n", "size", "quality", "response_format", "style", "user", "timeout", "model_id",
    "aws_access_key_id", "aws_secret_access_key", "aws_session_token", "aws_region_name",
    "aws_profile_name", "aws_bedrock_runtime_endpoint",
)  # fmt: skip
_STRING_KWARGS = ("quality", "style", "user", *_CALL_KWARGS[7:])


def _prepare(model: str, prompt: Any, kwargs: Mapping[str, Any], params: dict[str, Any]) -> _Call:
    spec, model_name, arn_target = plugins.get_registry().resolve(model)
    problems: list[Violation] = []
    if prompt is not None and not isinstance(prompt, str):
        problems.append(Violation("prompt", f"must be a string (got {type(prompt).__name__})"))
    for key in _STRING_KWARGS:
        value = kwargs.get(key)
        if value is not None and not isinstance(value, str):
            problems.append(Violation(key, f"must be a string (got {type(value).__name__})"))
    n = kwargs.get("n")
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        problems.append(Violation("n", f"must be a positive integer (got {n!r})"))
    size = None
    raw_size = kwargs.get("size")
    if raw_size is not None and raw_size != "auto":
        try:
            size = Size.parse(raw_size)
        except InvalidRequestError as exc:
            problems.extend(exc.violations)
    response_format = kwargs.get("response_format") or "b64_json"
    if response_format not in RESPONSE_FORMATS:
        problems.append(
            Violation("response_format", f"must be one of: {', '.join(RESPONSE_FORMATS)} (got {response_format!r})")
        )
    timeout = kwargs.get("timeout")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0):
        problems.append(Violation("timeout", f"must be a positive number of seconds (got {timeout!r})"))
    if problems:
        raise InvalidRequestError(problems, model=model_name)

    target = Target(
        model_id=kwargs.get("model_id") or arn_target or model_name,
        region=kwargs.get("aws_region_name"),
        credentials=AwsCredentials(
            access_key_id=kwargs.get("aws_access_key_id"),
            secret_access_key=kwargs.get("aws_secret_access_key"),
            session_token=kwargs.get("aws_session_token"),
            profile_name=kwargs.get("aws_profile_name"),
        ),
        endpoint_url=kwargs.get("aws_bedrock_runtime_endpoint"),
        timeout=float(timeout) if timeout is not None else None,
    )
    request = ImageRequest(
        model=spec,
        model_name=model_name,
        prompt=prompt,
        n=n,
        size=size,
        quality=kwargs.get("quality"),
        response_format=response_format,
        style=kwargs.get("style"),
        user=kwargs.get("user"),
        params=params,
        target=target,
    )
    hook = plugins.get_plugin_manager().hook
    prepared = hook.gesso_transform_request(request=request)
    if prepared is None:
        raise ProviderError(
            f"No installed plugin builds requests for model family {spec.family!r} (registered by {spec.distribution})",
            model=model_name,
        )
    if request.user:
        logger.debug("gesso call for user %s to %s", request.user, model_name)
    return _Call(request, prepared)


def _invoke(call: _Call, body: Mapping[str, Any]) -> RawResponse:
    invocation = Invocation(
        provider=call.request.model.provider,
        target=call.request.target,
        body=json.dumps(body, separators=(",", ":")).encode(),
    )
    raw = plugins.get_plugin_manager().hook.gesso_invoke(request=call.request, invocation=invocation)
    if raw is None:
        raise ProviderError(
            f"No installed plugin sends requests to provider {invocation.provider!r}", model=call.request.model_name
        )
    return raw


def _finish(call: _Call, raws: Sequence[RawResponse]) -> ImageResponse:
    hook = plugins.get_plugin_manager().hook
    request = call.request
    parsed: list[ParsedResponse] = []
    for raw in raws:
        result = hook.gesso_parse_response(request=request, prepared=call.prepared, response=raw)
        if result is None:
            raise ProviderError(
                f"No installed plugin parses responses of model family {request.model.family!r}",
                model=request.model_name,
            )
        parsed.append(result)
    data = [_image_data(img.b64, img.mime_type, request.response_format) for p in parsed for img in p.images]
    sizes = {str(p.size) for p in parsed if p.size is not None}
    response = ImageResponse(
        data=data,
        model=request.model_name,
        size=sizes.pop() if len(sizes) == 1 else None,
        filtered=sum(p.filtered for p in parsed),
        warnings=tuple(dict.fromkeys(w for p in parsed for w in p.warnings)),
    )
    cost = hook.gesso_calculate_cost(request=request, prepared=call.prepared, response=response)
    if cost is not None:
        response = attrs.evolve(response, cost=round(float(cost), 6))
    return response


def _image_data(b64: str, mime_type: str, response_format: str) -> ImageData:
    if response_format == "url":
        return ImageData(url=f"data:{mime_type};base64,{b64}")
    return ImageData(b64_json=b64)


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
