"""Small helpers shared by the tests."""

from __future__ import annotations

import base64
import json

from gesso.imaging import decode_png, inspect


def png_info(b64: str):
    return inspect(base64.b64decode(b64))


def decoded(b64: str):
    return decode_png(base64.b64decode(b64))


def invoke(client, model_id: str, body) -> dict:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = client.invoke_model(
        modelId=model_id, body=raw, contentType="application/json", accept="application/json"
    )
    return json.loads(response["body"].read())
