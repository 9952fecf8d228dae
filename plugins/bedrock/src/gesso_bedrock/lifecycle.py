"""Retired-model advice, as a wrapper around every Bedrock ``gesso_invoke``: when Bedrock says a model reached
its end of life, the error also names the active models installed that can stand in for it (or what to
install). A plugin of its own (entry point ``gesso.bedrock.lifecycle``), so it wraps whichever plugin sends."""

from __future__ import annotations

from collections.abc import Awaitable, Generator
from typing import TYPE_CHECKING, Any

from gesso.errors import ModelRetiredError
from gesso.hookspecs import hookimpl

if TYPE_CHECKING:
    from gesso.types import ImageRequest, Invocation, RawResponse


@hookimpl(wrapper=True)
def gesso_invoke(
    request: ImageRequest, invocation: Invocation
) -> Generator[None, RawResponse | None, RawResponse | None]:
    try:
        return (yield)
    except ModelRetiredError as exc:
        if invocation.provider != "bedrock":
            raise
        from gesso.plugins import get_registry
        from gesso_bedrock.provider import BEDROCK

        advice = BEDROCK.advice(request.model, get_registry())
        raise ModelRetiredError(f"{exc.message} {advice}", model=exc.model) from exc


@hookimpl(wrapper=True, specname="gesso_ainvoke")
def advise_async(request: ImageRequest, invocation: Invocation) -> Generator[None, Any, Any]:
    pending = yield
    if pending is None or invocation.provider != "bedrock":
        return pending
    return _advised(pending, request)


async def _advised(pending: Awaitable[RawResponse], request: ImageRequest) -> RawResponse:
    try:
        return await pending
    except ModelRetiredError as exc:
        from gesso.plugins import get_registry
        from gesso_bedrock.provider import BEDROCK

        raise ModelRetiredError(
            f"{exc.message} {BEDROCK.advice(request.model, get_registry())}", model=exc.model
        ) from exc
