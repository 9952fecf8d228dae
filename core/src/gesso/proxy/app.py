"""The OpenAI-compatible proxy: a Starlette app on the SDK's async entry points (nothing blocks the loop).

Routes (each with and without ``/v1``): ``POST /images/generations`` (JSON), ``POST /images/edits`` and
``POST /images/variations`` (multipart), ``GET /models``, ``GET /health/liveliness``, ``GET /health/readiness``,
``GET /metrics`` and ``GET /openapi.json``. Errors are OpenAI's ``{"error": {...}}`` with the statuses the
``openai`` client acts on; a client that disconnects cancels its call.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from gesso import api, errors, plugins
from gesso.proxy.config import Deployment, ProxyConfig
from gesso.proxy.metrics import Metrics
from gesso.proxy.router import Router

logger = logging.getLogger("gesso.proxy")

#: OpenAI's fields, which a client may send besides the model's own parameters
OPENAI_FIELDS = ("n", "size", "quality", "response_format", "style", "user")
#: form fields that stay text (everything else in a multipart form is read as JSON when it parses as JSON)
TEXT_FIELDS = frozenset(("model", "prompt", "size", "quality", "response_format", "style", "user"))
OPERATIONS = {
    "generate": api.aimage_generation,
    "edit": api.aimage_edit,
    "variation": api.aimage_variation,
}


class ProxyError(errors.GessoError):
    """An error of the proxy's own (a bad body, a missing key), in the same OpenAI shape."""

    def __init__(self, status: int, message: str, *, type: str, param: str | None = None, code: str | None = None):
        super().__init__(message, param=param, code=code)
        self.status_code = status
        self.type = type


class ClientGone(Exception):
    """The client disconnected before its answer: its call was cancelled, and nothing is sent."""


class Proxy:
    """The app's state: config, router, metrics, and each deployment's locked options."""

    def __init__(self, config: ProxyConfig, overrides: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        self.config = config
        self.overrides = {key: dict(value) for key, value in (overrides or {}).items()}
        self.router = Router(config.deployments, config.cooldown)
        self.metrics = Metrics()
        registry = plugins.get_registry()
        self.locked: dict[str, frozenset[str]] = {}
        for deployment in config.deployments:
            provider = registry.split_provider(deployment.model)
            self.locked[deployment.id] = frozenset(
                {*(provider.options if provider is not None else ()), "timeout", "model"}
            )
        self.started = time.time()

    # -- auth -------------------------------------------------------------------------------------------

    def authorize(self, request: Request) -> None:
        key = self.config.master_key
        if key is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            given = request.headers.get("x-api-key") or request.headers.get("api-key") or ""
            if not given:
                raise ProxyError(
                    401, "Missing API key: send Authorization: Bearer <key>", type="auth_error", code="missing_key"
                )
        if not hmac.compare_digest(given.strip().encode(), key.encode()):
            raise ProxyError(401, "Invalid API key", type="auth_error", code="invalid_api_key")

    # -- one image request --------------------------------------------------------------------------------

    async def images(self, request: Request, operation: str) -> Response:
        started = time.perf_counter()
        request_id = uuid.uuid4().hex
        route = {"generate": "generations", "edit": "edits", "variation": "variations"}[operation]
        model_name = "-"
        status = 500
        self.metrics.in_flight += 1
        try:
            self.authorize(request)
            if operation == "generate":
                fields = await self._json(request)
                images: list[bytes] = []
                mask = None
            else:
                fields, images, mask = await self._form(request)
            model_name = fields.pop("model", None)
            if not isinstance(model_name, str) or not model_name:
                raise ProxyError(400, "model: required, one of: " + ", ".join(self.config.model_names),
                                 type="invalid_request_error", param="model", code="missing_model")  # fmt: skip
            if model_name not in self.router.groups:
                raise ProxyError(
                    404, f"Model {model_name!r} is not served here; configured models: "
                    f"{', '.join(self.config.model_names)}", type="invalid_request_error", param="model",
                    code="model_not_found",
                )  # fmt: skip
            prompt = fields.pop("prompt", None)

            async def send(deployment: Deployment, overrides: dict[str, Any]) -> Any:
                locked = sorted(k for k in fields if k in self.locked[deployment.id])
                if locked:
                    raise ProxyError(
                        400, f"{', '.join(locked)}: set by the proxy's deployment; a client cannot change it",
                        type="invalid_request_error", param=locked[0], code="not_allowed",
                    )  # fmt: skip
                kwargs = {**deployment.params, **self.overrides.get(deployment.id, {}), **fields, **overrides}
                model = kwargs.pop("model")
                try:
                    return await _call(operation, model, prompt, images, mask, kwargs)
                except (errors.AuthenticationError, errors.PermissionDeniedError) as exc:
                    # the deployment's own credentials were refused: the caller's key is fine, so not a 401/403
                    raise errors.ProviderError(
                        f"The provider refused the proxy deployment's credentials ({deployment.id}): {exc.message}",
                        model=exc.model,
                    ) from exc

            response, deployment = await self._until_disconnect(request, self.router.call(model_name, send))
            status = 200
            self.metrics.paid(model_name, len(response.data), response.cost)
            logger.info(
                "request %s %s model_name=%s deployment=%s images=%d cost=%s latency=%.3fs", request_id, route,
                model_name, deployment.id, len(response.data), response.cost, time.perf_counter() - started,
            )  # fmt: skip
            headers = {
                "x-request-id": request_id,
                "x-gesso-deployment": deployment.id,
                "x-gesso-response-cost": "" if response.cost is None else f"{response.cost:.6f}",
            }
            return _json_response(response.to_dict(), 200, headers)
        except errors.GessoError as error:
            status = error.status_code
            self.metrics.error(error.type)
            logger.info("request %s %s model_name=%s failed: %s %s", request_id, route, model_name, status, error.type)
            return _error_response(error, request_id)
        except ClientGone:  # answered with nothing (uvicorn drops sends to a gone client), so no error is logged
            status = 499
            self.metrics.error("client_disconnected")
            logger.info("request %s %s model_name=%s: the client went away; call cancelled", request_id, route,
                        model_name)  # fmt: skip
            return Response(status_code=499)
        except asyncio.CancelledError:
            status = 499
            self.metrics.error("client_disconnected")
            logger.info("request %s %s model_name=%s: the client went away; call cancelled", request_id, route,
                        model_name)  # fmt: skip
            raise
        except Exception:
            self.metrics.error("internal_error")
            logger.exception("request %s %s failed", request_id, route)
            error = ProxyError(500, "Internal error in the proxy", type="internal_error")
            return _error_response(error, request_id)
        finally:
            self.metrics.in_flight -= 1
            self.metrics.observe(route, model_name if isinstance(model_name, str) else "-", status,
                                 time.perf_counter() - started)  # fmt: skip

    async def _until_disconnect(self, request: Request, call: Any) -> Any:
        """Run ``call``; if the client disconnects first, cancel it (its HTTP request and retries with it)."""
        task = asyncio.ensure_future(call)
        watcher = asyncio.ensure_future(_disconnected(request))
        try:
            done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
            if task in done:
                return task.result()
            # a cancellation can be lost (asyncio.wait_for before Python 3.12 drops it when what it waits for
            # completes at that moment, as a new connection does): repeat it until the call has ended
            while not task.done():
                task.cancel()
                await asyncio.wait({task}, timeout=0.05)
            if not task.cancelled():
                task.exception()  # retrieved: a call that failed as the client left is not logged as lost
            raise ClientGone
        finally:
            watcher.cancel()
            if not task.done():
                task.cancel()

    async def _body(self, request: Request) -> bytes:
        limit = self.config.max_request_bytes
        declared = request.headers.get("content-length")
        if declared is not None:
            if not declared.isdigit():
                raise ProxyError(400, "Content-Length must be a number", type="invalid_request_error")
            if int(declared) > limit:
                raise _too_large(limit)
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise _too_large(limit)
            chunks.append(chunk)
        return b"".join(chunks)

    async def _json(self, request: Request) -> dict[str, Any]:
        body = await self._body(request)
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ProxyError(400, f"The body is not valid JSON: {exc}", type="invalid_request_error",
                             code="invalid_json") from None  # fmt: skip
        if not isinstance(data, dict):
            raise ProxyError(400, "The body must be a JSON object", type="invalid_request_error", code="invalid_json")
        return data

    async def _form(self, request: Request) -> tuple[dict[str, Any], list[bytes], bytes | None]:
        from starlette.formparsers import MultiPartException, MultiPartParser

        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            raise ProxyError(400, "Edits and variations take multipart/form-data (image, mask, and fields)",
                             type="invalid_request_error", code="invalid_content_type")  # fmt: skip
        body = await self._body(request)

        async def stream() -> AsyncIterator[bytes]:
            yield body

        try:
            form = await MultiPartParser(request.headers, stream(), max_files=64, max_fields=256).parse()
        except (MultiPartException, ValueError) as exc:
            raise ProxyError(400, f"Malformed multipart body: {exc}", type="invalid_request_error",
                             code="invalid_multipart") from None  # fmt: skip
        fields: dict[str, Any] = {}
        images: list[bytes] = []
        mask: bytes | None = None
        try:
            for name, value in form.multi_items():
                if name in ("image", "image[]"):
                    images.append(await _bytes(value, name))
                elif name in ("mask", "mask[]"):
                    if mask is not None:
                        raise ProxyError(400, "mask: give one mask", type="invalid_request_error", param="mask")
                    mask = await _bytes(value, name)
                elif not isinstance(value, str):
                    raise ProxyError(400, f"{name}: a file where a value was expected", type="invalid_request_error",
                                     param=name)  # fmt: skip
                elif name in fields:
                    raise ProxyError(400, f"{name}: given twice", type="invalid_request_error", param=name)
                else:
                    fields[name] = value if name in TEXT_FIELDS else _form_value(value)
        finally:
            await form.close()
        return fields, images, mask

    # -- the other routes ---------------------------------------------------------------------------------

    async def models(self, request: Request) -> Response:
        try:
            self.authorize(request)
        except errors.GessoError as error:
            return _error_response(error, uuid.uuid4().hex)
        created = int(self.started)
        data = [{"id": name, "object": "model", "created": created, "owned_by": "gesso"}
                for name in self.config.model_names]  # fmt: skip
        return JSONResponse({"object": "list", "data": data})

    async def liveliness(self, request: Request) -> Response:
        return JSONResponse("I'm alive!")

    async def readiness(self, request: Request) -> Response:
        return JSONResponse({"status": "healthy", "models": len(self.config.model_names),
                             "deployments": len(self.config.deployments)})  # fmt: skip

    async def metrics_text(self, request: Request) -> Response:
        return PlainTextResponse(self.metrics.render(), media_type="text/plain; version=0.0.4")

    async def openapi(self, request: Request) -> Response:
        from gesso.proxy.openapi import spec

        return JSONResponse(spec(self.config.model_names))


async def _call(operation: str, model: str, prompt: Any, images: list[bytes], mask: Any, kwargs: dict[str, Any]) -> Any:
    call = OPERATIONS[operation]
    if operation == "generate":
        return await call(model, prompt, **kwargs)
    if operation == "edit":
        return await call(model, images or None, prompt, mask=mask, **kwargs)
    if prompt is not None:
        kwargs["prompt"] = prompt
    return await call(model, images or None, **kwargs)


async def _disconnected(request: Request) -> None:
    """Returns when the client has gone (the body is read by then, so the next message is the disconnect)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def _bytes(value: Any, name: str) -> bytes:
    if isinstance(value, str):
        return value.encode()  # base64 or a data: URL in a text field: the SDK reads it
    data = await value.read()
    if not data:
        raise ProxyError(400, f"{name}: an empty file", type="invalid_request_error", param=name)
    return data


def _form_value(value: str) -> Any:
    """A form field as JSON when it is JSON (numbers, booleans, objects, lists), else as text."""
    text = value.strip()
    if text[:1] in "{[-0123456789" or text in ("true", "false", "null"):
        try:
            return json.loads(text)
        except ValueError:
            return value
    return value


def _too_large(limit: int) -> ProxyError:
    return ProxyError(413, f"The request body is larger than the proxy takes ({limit} bytes; "
                      "general_settings.max_request_size_mb)", type="invalid_request_error",
                      code="request_too_large")  # fmt: skip


def _json_response(content: Any, status: int, headers: dict[str, str]) -> Response:
    body = json.dumps(content, separators=(",", ":")).encode()
    return Response(body, status_code=status, headers=headers, media_type="application/json")


def _error_response(error: errors.GessoError, request_id: str) -> Response:
    headers = {"x-request-id": request_id}
    if isinstance(error, errors.RateLimitError):
        if error.code == "quota_exceeded":
            headers["x-should-retry"] = "false"
        else:
            headers["retry-after"] = "1"
    return _json_response(error.to_dict(), error.status_code, headers)


def build_app(config: ProxyConfig, overrides: Mapping[str, Mapping[str, Any]] | None = None) -> Starlette:
    proxy = Proxy(config, overrides)
    routes = []
    for prefix in ("", "/v1"):
        routes += [
            Route(
                f"{prefix}/images/generations", functools.partial(proxy.images, operation="generate"), methods=["POST"]
            ),
            Route(f"{prefix}/images/edits", functools.partial(proxy.images, operation="edit"), methods=["POST"]),
            Route(
                f"{prefix}/images/variations", functools.partial(proxy.images, operation="variation"), methods=["POST"]
            ),
            Route(f"{prefix}/models", proxy.models, methods=["GET"]),
        ]
    routes += [
        Route("/health/liveliness", proxy.liveliness, methods=["GET"]),
        Route("/health/liveness", proxy.liveliness, methods=["GET"]),
        Route("/health/readiness", proxy.readiness, methods=["GET"]),
        Route("/metrics", proxy.metrics_text, methods=["GET"]),
        Route("/openapi.json", proxy.openapi, methods=["GET"]),
    ]
    app = Starlette(routes=routes, exception_handlers={404: _not_found, 405: _not_allowed})
    app.state.proxy = proxy
    return app


async def _not_found(request: Request, exc: Exception) -> Response:
    error = ProxyError(404, f"No route {request.method} {request.url.path}", type="invalid_request_error",
                       code="not_found")  # fmt: skip
    return _error_response(error, uuid.uuid4().hex)


async def _not_allowed(request: Request, exc: Exception) -> Response:
    error = ProxyError(405, f"{request.method} is not allowed on {request.url.path}", type="invalid_request_error",
                       code="method_not_allowed")  # fmt: skip
    return _error_response(error, uuid.uuid4().hex)
