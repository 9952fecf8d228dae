"""A local Bedrock Runtime emulator: the ``InvokeModel`` and ``Converse`` REST protocols on loopback, no AWS
account.

``POST /model/{modelId}/invoke`` (or ``/converse``, for the models Bedrock serves through Converse) with a SigV4
(or Bearer) ``Authorization`` header. The emulator
routes the model id (percent-encoded or raw; base ids, inference-profile ids and ARNs), validates the
body as Bedrock does, and answers with Bedrock-shaped success bodies (real PNGs) or errors (status,
``x-amzn-ErrorType``, ``{"message": ...}``). Each family plugin emulates its own models: the
``emulator`` callable of its :class:`gesso.types.Model` receives an :class:`EmulatedCall`.

    with Emulator(port=0) as emu:
        gesso.image_generation(..., aws_bedrock_runtime_endpoint=emu.url, ...)

Content-filter behaviour is triggered by marker words in any prompt text (see ``BLOCK_*``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Generator, Iterator, Mapping
from typing import Any
from urllib.parse import unquote

from gesso.types import Model
from gesso_bedrock import CONVERSE
from gesso_bedrock.emulator import everit, faults, sigv4
from gesso_bedrock.emulator.call import (
    BLOCK_INPUT,
    BLOCK_OUTPUT,
    BLOCK_SOME,
    EmulatedCall,
    EmulatorError,
    Headers,
    RecordedRequest,
)
from gesso_bedrock.emulator.faults import Fault, FaultPlan
from gesso_bedrock.engine import APIS

__all__ = ["BLOCK_INPUT", "BLOCK_OUTPUT", "BLOCK_SOME", "EmulatedCall", "Emulator", "EmulatorError", "RecordedRequest"]

logger = logging.getLogger("gesso_bedrock.emulator")

#: The access key and secret the CLI's ``--emulator`` mode signs with (and the emulator verifies).
EMULATOR_ACCESS_KEY = "GESSOEMULATORKEY"
EMULATOR_SECRET_KEY = "gesso-emulator-secret-key"  # not a secret: a fixed local test credential

ERROR_NAMESPACE = "http://internal.amazon.com/coral/com.amazon.bedrock/"
_MODEL_ID_RE = re.compile(
    r"^(arn:aws(-[a-z]+)*:bedrock:[a-z0-9-]{1,20}:(\d{12})?:[a-z-]+/[a-zA-Z0-9:._-]+|[a-zA-Z0-9:._-]+)$"
)
INVALID_IDENTIFIER = "The provided model identifier is invalid."
#: InvokeModel's body blob is at most 25,000,000 bytes (botocore's service model).
MAX_BODY = 25_000_000
CONTROL_PREFIX = "/_gesso/"
CONVERSE_UNSUPPORTED = (
    "This action doesn't support the model that you provided. Try again with a supported text or chat model."
)


class Emulator:
    """The emulator: ``handle()`` answers one request; ``start()`` serves it over HTTP on a thread.

    ``credentials`` maps access key ids to secret keys: when given, signatures are recomputed and
    checked (unknown keys are refused); when ``None`` any well-formed SigV4 header is accepted.
    ``api_keys``: Bedrock API keys accepted as ``Authorization: Bearer`` (``None`` accepts any).
    ``application_profiles`` maps application-inference-profile or provisioned-model ids (or whole
    ARNs) to the base model id they stand for. ``workers`` bounds the threads that run models' emulations
    (latencies hold none); ``0`` runs them on the server's event loop, the fastest for emulations that never
    block. ``record`` and ``record_bytes`` bound what ``requests``
    keeps (the newest requests, their bodies within that many bytes). ``faults`` holds injected faults
    (:meth:`inject`, or ``POST /_gesso/faults``); ``tls`` is a ``(certfile, keyfile)`` pair to serve
    HTTPS (needed by clients that send Bedrock API keys, which botocore only sends over HTTPS).

    Control endpoints (no auth, loopback use): ``GET|POST|DELETE /_gesso/faults`` lists, adds (a JSON
    fault) or clears faults; ``GET /_gesso/stats`` answers request counts and the most requests ever
    in flight at once.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 4010,
        *,
        credentials: Mapping[str, str] | None = None,
        api_keys: set[str] | None = None,
        application_profiles: Mapping[str, str] | None = None,
        registry: Any = None,
        record: int = 1000,
        record_bytes: int = 64 << 20,
        faults: list[Fault] | None = None,
        fault_seed: int | None = None,
        tls: tuple[str, str] | None = None,
        workers: int = 256,
    ) -> None:
        self.host = host
        self.port = port
        self.credentials = dict(credentials) if credentials is not None else None
        self.api_keys = set(api_keys) if api_keys is not None else None
        self.application_profiles: dict[str, str] = dict(application_profiles or {})
        self._registry = registry
        self.requests: collections.deque[RecordedRequest] = collections.deque(maxlen=record)
        #: the recorded bodies are kept within this many bytes: older records are dropped first
        self.record_bytes = record_bytes
        self._recorded = [0, 0]  # how many requests, and their body bytes, the record holds
        self._record_lock = threading.Lock()
        self.faults = FaultPlan(fault_seed)
        for fault in faults or ():
            self.faults.add(fault)
        self.tls = tls
        #: threads that run models' emulations (latencies hold none)
        self.workers = workers
        self._server: Any = None
        self._stats_lock = threading.Lock()
        self.total_requests = 0
        self.in_flight = 0
        self.max_in_flight = 0

    def inject(self, kind: str, **fields: Any) -> Fault:
        """Add a fault: ``emulator.inject("throttle", count=2)``; see :class:`~gesso_bedrock.emulator.faults.Fault`."""
        return self.faults.add(faults.from_dict({"kind": kind, **fields}))

    def stats(self) -> dict[str, int]:
        with self._stats_lock:
            return {"requests": self.total_requests, "in_flight": self.in_flight, "max_in_flight": self.max_in_flight}

    # -- serving ------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    def start(self) -> Emulator:
        """Serve on a background thread; ``port=0`` picks a free port (read it back from ``url``)."""
        if self._server is None:
            from gesso_bedrock.emulator.server import Server

            self._server = Server(self, self.host, self.port, tls=self.tls, workers=self.workers)
            self.port = self._server.port
            self._server.start()
        return self

    def serve_forever(self) -> None:
        """Serve on the calling thread until interrupted."""
        from gesso_bedrock.emulator.server import Server

        self._server = Server(self, self.host, self.port, tls=self.tls, workers=self.workers)
        self.port = self._server.port
        try:
            self._server.serve_forever()
        finally:
            self._server.socket.close()
            self._server = None

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def registry(self) -> Any:
        if self._registry is None:
            from gesso.plugins import get_registry

            self._registry = get_registry()
        return self._registry

    # -- one request --------------------------------------------------------------------------------

    def handle(
        self, method: str, target: str, headers: Headers | Mapping[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        """Answer one HTTP request: returns (status, headers, body)."""
        headers = _message(headers)
        path, _, query = target.partition("?")
        if path.startswith(CONTROL_PREFIX):
            return self._control(method, path[len(CONTROL_PREFIX) :], body)
        with self._counted():
            steps = self._steps(method, path, query, headers, body)
            try:
                while True:
                    delay = next(steps)
                    if delay:
                        time.sleep(delay)
            except StopIteration as done:
                answer: tuple[int, dict[str, str], bytes] = done.value
                return answer

    async def handle_async(
        self, method: str, target: str, headers: Headers, body: bytes, *, pool: Any
    ) -> tuple[int, dict[str, str], bytes]:
        """:meth:`handle` for the asyncio server: a latency is awaited (no thread held while it lasts), and the
        model's emulation runs on ``pool``."""
        path, _, query = target.partition("?")
        if path.startswith(CONTROL_PREFIX):
            return self._control(method, path[len(CONTROL_PREFIX) :], body)
        loop = asyncio.get_running_loop()
        with self._counted():
            steps = self._steps(method, path, query, headers, body)
            delay = next(steps)  # the checks before any latency: cheap, on the loop
            if delay:
                await asyncio.sleep(delay)
            if pool is None:  # no worker threads: emulations run on the loop (fastest, for emulations that never block)
                return _finish(steps)
            return await loop.run_in_executor(pool, _finish, steps)

    @contextlib.contextmanager
    def _counted(self) -> Iterator[None]:
        with self._stats_lock:
            self.total_requests += 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            yield
        finally:
            with self._stats_lock:
                self.in_flight -= 1

    def _steps(
        self, method: str, path: str, query: str, headers: Headers, body: bytes
    ) -> Generator[float, None, tuple[int, dict[str, str], bytes]]:
        """One request, in steps: it yields the latency to wait (0.0 when none) once the request is checked
        and before the model's emulation runs, and returns the answer."""
        model_id = ""
        signed_by = None
        yielded = False
        try:
            api = path.rsplit("/", 1)[-1]
            if not path.startswith("/model/") or api not in APIS or len(path) <= len(f"/model//{api}"):
                raise EmulatorError(404, "UnknownOperationException", f"Unknown operation {method} {path}")
            if method != "POST":
                raise EmulatorError(405, "UnknownOperationException", f"Unsupported method {method} for {path}")
            model_id = unquote(path[len("/model/") : -len(f"/{api}")])
            signed_by = self._authenticate(method, path, query, headers, body)
            model = self.resolve(model_id)
            if api == "converse" and CONVERSE not in model.capabilities:
                # Bedrock's answer to Converse with a model it serves only through InvokeModel (an image model)
                raise EmulatorError.validation(CONVERSE_UNSUPPORTED)
            # Converse takes its guardrail in the body (checked with it); InvokeModel in headers
            guarded = b'"guardrailConfig"' in body if api == "converse" else _check_guardrail(headers)
            delay, injected = self.faults.decide((model.id, model_id), guarded=guarded)
            yielded = True
            yield delay
            if injected is not None:
                raise EmulatorError(*injected)
            status, payload = 200, self._invoke(model, model_id, body, api)
        except EmulatorError as exc:
            status, payload = exc.status, {"message": exc.message}
            extra = {"x-amzn-ErrorType": f"{exc.code}:{ERROR_NAMESPACE}"}
        except Exception:  # a bug in a model emulator must look like a server fault, not a hang
            logger.exception("emulator failure for %s", model_id)
            status, payload = 500, {"message": "Internal server error"}
            extra = {"x-amzn-ErrorType": f"InternalServerException:{ERROR_NAMESPACE}"}
        else:
            extra = {}
        if not yielded:
            yield 0.0
        self._record(
            RecordedRequest(
                model_id=model_id, path=path, headers=dict(headers.items()), body=body, status=status,
                signed_by=signed_by,
            )
        )  # fmt: skip
        out = json.dumps(payload, separators=(",", ":")).encode()
        response_headers = {"Content-Type": "application/json", "x-amzn-RequestId": str(uuid.uuid4()), **extra}
        return status, response_headers, out

    def _record(self, request: RecordedRequest) -> None:
        with self._record_lock:
            if len(self.requests) != self._recorded[0]:  # someone changed the record (a test cleared it)
                self._recorded = [len(self.requests), sum(len(r.body) for r in self.requests)]
            count, kept = self._recorded
            if self.requests.maxlen is not None and count == self.requests.maxlen:
                kept -= len(self.requests[0].body)  # append() drops the oldest
                count -= 1
            self.requests.append(request)
            count, kept = count + 1, kept + len(request.body)
            while kept > self.record_bytes and count > 1:
                kept -= len(self.requests.popleft().body)
                count -= 1
            self._recorded = [count, kept]

    def _control(self, method: str, name: str, body: bytes) -> tuple[int, dict[str, str], bytes]:
        status = 200
        payload: Any = None  # the answer's JSON: the faults, a fault, the stats or an error
        if name == "faults" and method == "GET":
            payload = self.faults.list()
        elif name == "faults" and method == "POST":
            try:
                payload = self.faults.add(faults.from_dict(json.loads(body or b"{}"))).to_dict()
            except (ValueError, TypeError) as exc:
                status, payload = 400, {"message": str(exc)}
        elif name == "faults" and method == "DELETE":
            self.faults.clear()
            payload = []
        elif name == "stats" and method == "GET":
            payload = self.stats()
        else:
            status, payload = 404, {"message": f"unknown control endpoint {method} {CONTROL_PREFIX}{name}"}
        return status, {"Content-Type": "application/json"}, json.dumps(payload).encode()

    def _authenticate(self, method: str, path: str, query: str, headers: Headers, body: bytes) -> sigv4.SignedBy | None:
        header = headers.get("Authorization") or ""
        if header.startswith("Bearer "):
            token = header[len("Bearer ") :].strip()
            if not token or (self.api_keys is not None and token not in self.api_keys):
                raise EmulatorError(
                    403, "UnrecognizedClientException", "Invalid API Key format: Must be a valid Bedrock API key."
                )
            return None
        try:
            return sigv4.verify(
                method=method, raw_path=path, query=query, headers=headers, body=body, secrets=self.credentials
            )
        except sigv4.SignatureError as exc:
            raise EmulatorError(400 if exc.code == "IncompleteSignature" else 403, exc.code, exc.message) from exc

    def resolve(self, model_id: str) -> Model:
        """The registered model an invoke id stands for, or the error Bedrock answers with."""
        if not (1 <= len(model_id) <= 2048) or not _MODEL_ID_RE.match(model_id):
            raise EmulatorError.validation(
                f"1 validation error detected: Value '{model_id}' at 'modelId' failed to satisfy constraint: "
                "Member must satisfy regular expression pattern: "
                r"(arn:aws(-[^:]+)?:bedrock:[a-z0-9-]{1,20}:(([0-9]{12}:custom-model/[a-z0-9-]{1,63}[.]{1}[a-z0-9-]{1,63}"
                r"(([:][a-z0-9-]{1,63}){0,2})?/[a-z0-9]{12})|(:foundation-model/[a-z0-9-]{1,63}[.]{1}[a-z0-9-]{1,63}"
                r"([.:]?[a-z0-9-]{1,63}))|([0-9]{12}:provisioned-model/[a-z0-9]{12})))|([a-zA-Z0-9-:.]+)"
            )
        invoked = model_id
        if model_id.startswith("arn:"):
            parts = model_id.split(":", 5)
            kind, _, ident = (parts[5] if len(parts) == 6 else "").partition("/")
            if kind in ("foundation-model", "inference-profile"):
                invoked = ident
            elif kind in ("application-inference-profile", "provisioned-model"):
                invoked = self.application_profiles.get(model_id) or self.application_profiles.get(ident) or ""
                if not invoked:
                    # Bedrock knows the account's profiles; the emulator must be told which model each serves
                    raise EmulatorError.validation(
                        f"{INVALID_IDENTIFIER} (gesso emulator: the {kind} {ident or model_id} is not mapped to a "
                        f"model; start the emulator with --app-profile {ident or model_id}=MODEL_ID, e.g. "
                        f"--app-profile {ident or model_id}=amazon.nova-canvas-v1:0, or set "
                        "Emulator.application_profiles)"
                    )
            else:
                invoked = ""
        model: Model | None = self.registry.get(invoked) if invoked else None
        if model is None:
            raise EmulatorError.validation(INVALID_IDENTIFIER)
        if "inference_profile_only" in model.capabilities and invoked == model.id:
            raise EmulatorError.validation(
                f"Invocation of model ID {model.id} with on-demand throughput isn\u2019t supported. Retry your request "
                "with the ID or ARN of an inference profile that contains this model."
            )
        if model.emulator is None:
            raise EmulatorError.validation(INVALID_IDENTIFIER)
        return model

    def _invoke(self, model: Model, model_id: str, body: bytes, api: str = "invoke") -> Any:
        try:
            parsed = json.loads(body)
            if b"\\ud" in body.lower():  # a lone surrogate escape is no Unicode text
                json.dumps(parsed, ensure_ascii=False).encode("utf-8")
        except (ValueError, UnicodeError, RecursionError) as exc:
            raise EmulatorError.validation(everit.malformed([])) from exc
        assert model.emulator is not None
        if api == "converse" and isinstance(parsed, dict) and "guardrailConfig" in parsed:
            _check_guardrail_config(parsed.pop("guardrailConfig"))
        return model.emulator(EmulatedCall(model=model, model_id=model_id, body=parsed, emulator=self, api=api))


def _check_guardrail(headers: Headers) -> bool:
    """Whether the request names a guardrail; Bedrock's error when it names one without a version."""
    identifier = headers.get("X-Amzn-Bedrock-GuardrailIdentifier")
    if identifier and not headers.get("X-Amzn-Bedrock-GuardrailVersion"):
        # InvokeModel API reference: an error is thrown when "You provide a guardrail identifier, but
        # guardrailVersion isn't specified" (its wording was not captured)
        raise EmulatorError.validation("A guardrail version is required when a guardrail identifier is provided.")
    return bool(identifier)


def _check_guardrail_config(config: Any) -> None:
    """Converse's ``guardrailConfig``: an identifier and a version, as InvokeModel requires them together (botocore's
    GuardrailConfiguration marks neither required; the emulator asks for both, in its own wording), and a ``trace``
    of GuardrailTrace's values."""
    if not isinstance(config, dict) or not config.get("guardrailIdentifier") or not config.get("guardrailVersion"):
        raise EmulatorError.validation("guardrailConfig requires guardrailIdentifier and guardrailVersion.")
    if config.get("trace", "disabled") not in ("enabled", "disabled", "enabled_full"):
        raise EmulatorError.validation("guardrailConfig.trace must be one of enabled, disabled, enabled_full.")


def _message(headers: Headers | Mapping[str, str]) -> Headers:
    return headers if isinstance(headers, Headers) else Headers(headers)


def _finish(steps: Generator[float, None, tuple[int, dict[str, str], bytes]]) -> tuple[int, dict[str, str], bytes]:
    """Run the rest of a request's steps (the model's emulation) to its answer."""
    try:
        next(steps)
    except StopIteration as done:
        answer: tuple[int, dict[str, str], bytes] = done.value
        return answer
    raise RuntimeError("an emulated request waited twice")
