"""Fault injection for the emulator: latency, throttling, 5xx, model timeouts, guardrail interventions and
end-of-life answers, for every model or one, on the first N matching requests or on a fraction of them."""

from __future__ import annotations

import math
import random
import re
import threading
import time
from collections.abc import Mapping
from typing import Any

import attrs

from gesso.params import short

#: kind -> (status, Bedrock error code, message) answered when the fault fires.
ANSWERS: dict[str, tuple[int, str, str]] = {
    "throttle": (429, "ThrottlingException", "Too many requests, please wait before trying again."),
    "not_ready": (429, "ModelNotReadyException", "Model is not ready for inference. Wait and try your request again."),
    "error": (500, "InternalServerException", "The server encountered an internal error while processing the request."),
    "unavailable": (503, "ServiceUnavailableException", "Bedrock is unable to process your request."),
    "model_error": (424, "ModelErrorException", "The model returned an error. Try your request again."),
    "timeout": (408, "ModelTimeoutException", "Model has timed out in processing the request. Try your request again."),
    # a Bedrock guardrail intervening; fires only on requests that name a guardrail
    "guardrail": (
        400,
        "ValidationException",
        "This request has been blocked by the guardrail you configured: the guardrail intervened on the input.",
    ),
    "eol": (
        404,
        "ResourceNotFoundException",
        "This model version has reached the end of its life. Please refer to the AWS documentation for more details.",
    ),
}
KINDS = ("latency", *ANSWERS)
MAX_SECONDS = 3600
_CODE_RE = re.compile(r"^[A-Za-z][A-Za-z0-9.]{0,99}$")


@attrs.define
class Fault:
    """One injected fault. ``model`` limits it to a base model id (or the id as invoked); ``count`` to
    the first N matching requests; ``rate`` to that fraction of them. ``seconds`` is the latency added
    (for ``latency``, or before any answer). ``status``/``code``/``message`` override the answer."""

    kind: str = attrs.field(validator=attrs.validators.in_(KINDS))
    model: str | None = None
    count: int | None = attrs.field(default=None, validator=attrs.validators.optional(attrs.validators.ge(0)))
    rate: float | None = attrs.field(
        default=None, validator=attrs.validators.optional([attrs.validators.ge(0), attrs.validators.le(1)])
    )
    seconds: float = attrs.field(default=0.0, validator=attrs.validators.ge(0))
    status: int | None = None
    code: str | None = None
    message: str | None = None
    seen: int = 0
    fired: int = 0

    def __attrs_post_init__(self) -> None:
        # the code and status become response headers and the status line of every later answer
        if self.code is not None and not (isinstance(self.code, str) and _CODE_RE.match(self.code)):
            raise ValueError(f"code must be an error name of letters and digits (got {self.code!r})")
        if self.status is not None and not (isinstance(self.status, int) and 400 <= self.status <= 599):
            raise ValueError(f"status must be an HTTP error status, 400 to 599 (got {self.status!r})")
        if self.message is not None and not isinstance(self.message, str):
            raise ValueError(f"message must be a string (got {type(self.message).__name__})")
        if not (math.isfinite(self.seconds) and self.seconds <= MAX_SECONDS):
            raise ValueError(f"seconds must be at most {MAX_SECONDS} (got {self.seconds!r})")
        if self.model is not None and not isinstance(self.model, str):
            raise ValueError(f"model must be a model id (got {type(self.model).__name__})")

    def answer(self) -> tuple[int, str, str]:
        status, code, message = ANSWERS[self.kind]
        return self.status or status, self.code or code, self.message or message

    def to_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)


def parse_spec(spec: str) -> Fault:
    """``KIND[:key=value,...]`` as given to ``gesso emulator --fault``: ``throttle:count=2``,
    ``error:rate=0.1,status=503``, ``latency:seconds=1``, ``eol:model=amazon.nova-canvas-v1:0``."""
    kind, _, rest = spec.partition(":")
    fields: dict[str, Any] = {"kind": kind.strip()}
    for part in filter(None, (p.strip() for p in rest.split(","))):
        key, sep, value = part.partition("=")
        if not sep:
            raise ValueError(f"expected key=value in fault spec, got {part!r}")
        fields[key.strip()] = value.strip()
    return from_dict(fields)


#: the numeric fields: (int or float, lowest, highest)
_NUMBERS: dict[str, tuple[type, float | None, float | None]] = {
    "count": (int, 0, None),
    "rate": (float, 0, 1),
    "seconds": (float, 0, MAX_SECONDS),
    "status": (int, 400, 599),
}


def number(value: Any, kind: type, low: float | None = None, high: float | None = None) -> Any:
    """``value`` (text, or a JSON number) as an ``int`` or a finite ``float`` from ``low`` to ``high`` (either
    may be None: no bound); a ValueError that says what was wanted, for anything else (nan, inf, 1e3 for an
    integer, a number too large to read)."""
    try:
        if isinstance(value, bool) or (kind is int and isinstance(value, float) and not value.is_integer()):
            raise ValueError
        got = kind(value.strip() if isinstance(value, str) else value)
        if kind is float and not math.isfinite(got):
            raise ValueError
    except (ValueError, TypeError, OverflowError):
        got = None
    if got is None or (low is not None and got < low) or (high is not None and got > high):
        wanted = "an integer" if kind is int else "a number"
        if low is not None and high is not None:
            wanted += f" from {low} to {high}"
        elif low is not None:
            wanted += f", {low} or more"
        raise ValueError(f"must be {wanted} (got {short(value, 40)})")
    return got


def from_dict(data: Mapping[str, Any]) -> Fault:
    if not isinstance(data, Mapping):
        raise ValueError(f"a fault is a JSON object (got {type(data).__name__})")
    unknown = set(data) - {"kind", "model", "count", "rate", "seconds", "status", "code", "message"}
    if unknown:
        raise ValueError(f"unknown fault field(s): {', '.join(sorted(unknown))}")
    fields = dict(data)
    for key, value in data.items():
        if key in _NUMBERS and value is not None:
            try:
                fields[key] = number(value, *_NUMBERS[key])
            except ValueError as exc:
                raise ValueError(f"{key} {exc}") from None
    if fields.get("kind") not in KINDS:
        raise ValueError(f"fault kind must be one of: {', '.join(KINDS)} (got {fields.get('kind')!r})")
    return Fault(**fields)


class FaultPlan:
    """The faults in force, applied in the order they were added. Thread-safe."""

    def __init__(self, seed: int | None = None) -> None:
        self._faults: list[Fault] = []
        self._lock = threading.Lock()
        self._random = random.Random(seed)

    def add(self, fault: Fault) -> Fault:
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def list(self) -> list[dict[str, Any]]:
        with self._lock:
            return [f.to_dict() for f in self._faults]

    def apply(self, model_ids: tuple[str, ...], *, guarded: bool = False) -> tuple[int, str, str] | None:
        """Decide for one request (``guarded``: it names a guardrail): sleep for latencies; return the
        error answer to send, if any."""
        delay, answer = self.decide(model_ids, guarded=guarded)
        if delay:
            time.sleep(delay)
        return answer

    def decide(self, model_ids: tuple[str, ...], *, guarded: bool = False) -> tuple[float, tuple[int, str, str] | None]:
        """What the faults do to one request, without waiting: (seconds of latency, error answer or None)."""
        delay = 0.0
        answer = None
        with self._lock:
            for fault in self._faults:
                if fault.model is not None and fault.model not in model_ids:
                    continue
                if fault.kind == "guardrail" and not guarded:
                    continue
                fault.seen += 1
                if fault.count is not None and fault.fired >= fault.count:
                    continue
                if fault.rate is not None and self._random.random() >= fault.rate:
                    continue
                fault.fired += 1
                delay += fault.seconds
                if fault.kind != "latency":
                    answer = fault.answer()
                    break
        return delay, answer
