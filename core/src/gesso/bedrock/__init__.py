"""gesso's built-in Bedrock transport plugin: implements ``gesso_invoke`` for provider ``bedrock``.

Importing this module does not import boto3; the first call does (see :mod:`gesso.bedrock.transport`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gesso.hookspecs import hookimpl

if TYPE_CHECKING:
    from gesso.types import ImageRequest, Invocation, RawResponse


@hookimpl(trylast=True)
def gesso_invoke(request: ImageRequest, invocation: Invocation) -> RawResponse | None:
    if invocation.provider != "bedrock":
        return None
    from gesso.bedrock import transport

    return transport.invoke(invocation, model=request.model_name)
