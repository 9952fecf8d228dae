"""gesso-bedrock: the Amazon Bedrock provider plugin. It registers the provider (model strings, options,
targets, emulator: :mod:`gesso_bedrock.provider`), sends calls (``gesso_invoke``: :mod:`gesso_bedrock.transport`)
and adds ``gesso emulator`` to the command line (:mod:`gesso_bedrock.cli`). A model whose capabilities include
:data:`CONVERSE` is sent to Bedrock's ``Converse`` API, every other to ``InvokeModel``. The retired-model advice is a
wrapper around ``gesso_invoke`` in :mod:`gesso_bedrock.lifecycle`. It also serves the ``s3://`` image store
(:mod:`gesso_bedrock.store`), for any provider's calls.

Importing this module imports neither boto3 nor Pillow; the first call does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gesso.hookspecs import hookimpl

if TYPE_CHECKING:
    from collections.abc import Awaitable

    from gesso.provider import Provider
    from gesso.types import ImageRequest, Invocation, RawResponse, StoreScheme


@hookimpl
def gesso_register_providers() -> list[Provider]:
    from gesso_bedrock.provider import BEDROCK

    return [BEDROCK]


@hookimpl(trylast=True)
def gesso_invoke(request: ImageRequest, invocation: Invocation) -> RawResponse | None:
    if invocation.provider != "bedrock":
        return None
    from gesso_bedrock import transport

    invocation, api = _sent(request, invocation)
    return transport.invoke(invocation, model=request.model_name, api=api)


@hookimpl(trylast=True)
def gesso_ainvoke(request: ImageRequest, invocation: Invocation) -> Awaitable[RawResponse] | None:
    if invocation.provider != "bedrock":
        return None
    from gesso_bedrock import transport

    invocation, api = _sent(request, invocation)
    return transport.ainvoke(invocation, model=request.model_name, api=api)


#: the capability tag of a model Bedrock serves through its ``Converse`` API (``POST /model/{modelId}/converse``)
#: rather than ``InvokeModel``: its family builds Converse request bodies, and gesso-bedrock sends them there
CONVERSE = "bedrock_converse"


def _api(request: ImageRequest) -> str:
    return "converse" if CONVERSE in request.model.capabilities else "invoke"


def _sent(request: ImageRequest, invocation: Invocation) -> tuple[Invocation, str]:
    """The invocation as its API takes it, and the API. Converse takes a guardrail in its body (BOTO's
    ``guardrailConfig``: ``guardrailIdentifier``, ``guardrailVersion``, ``trace``), not as InvokeModel's
    ``X-Amzn-Bedrock-*`` headers, which it would ignore: the guardrail options move there."""
    api = _api(request)
    if api == "invoke":
        return invocation, api
    from gesso_bedrock.converse import guarded

    return guarded(invocation), api


@hookimpl
def gesso_register_image_stores() -> list[StoreScheme]:
    from gesso_bedrock.store import S3

    return [S3]


@hookimpl
def gesso_register_commands(subcommands: Any) -> None:
    from gesso_bedrock import cli

    cli.add_emulator_command(subcommands)
