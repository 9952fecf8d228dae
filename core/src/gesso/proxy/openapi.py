"""The proxy's OpenAPI 3.1 document, written to match what the routes in :mod:`gesso.proxy.app` do."""

from __future__ import annotations

from typing import Any

from gesso import __version__

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
        }
    },
}
_IMAGES = {
    "type": "object",
    "required": ["created", "data"],
    "properties": {
        "created": {"type": "integer"},
        "data": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "b64_json": {"type": "string"},
                    "url": {"type": "string"},
                    "revised_prompt": {"type": "string"},
                    "seed": {"type": "integer"},
                },
            },
        },
        "model": {"type": "string"},
        "cost": {"type": ["number", "null"]},
        "size": {"type": "string"},
        "warnings": {"type": "array", "items": {"type": "string"}},
    },
    "additionalProperties": True,
}
_OPENAI_FIELDS = {
    "model": {"type": "string", "description": "a configured model_name"},
    "prompt": {"type": "string"},
    "n": {"type": "integer", "minimum": 1},
    "size": {"type": "string", "examples": ["1024x1024"]},
    "quality": {"type": "string"},
    "response_format": {"type": "string", "enum": ["b64_json", "url"]},
    "style": {"type": "string"},
    "user": {"type": "string"},
    "output_format": {"type": "string", "enum": ["png", "jpeg", "webp"]},
    "output_compression": {"type": "integer", "minimum": 0, "maximum": 100},
    "background": {"type": "string", "enum": ["auto", "opaque", "transparent"]},
    "moderation": {"type": "string", "enum": ["auto", "low"]},
    "stream": {"type": "boolean"},
    "partial_images": {"type": "integer", "minimum": 0, "maximum": 3},
    "snap_size": {"type": "boolean", "description": "gesso's: use the nearest size the model makes"},
}


def _answers(*statuses: int) -> dict[str, Any]:
    answers: dict[str, Any] = {
        "200": {
            "description": "The images",
            "headers": {
                "x-request-id": {"schema": {"type": "string"}},
                "x-gesso-response-cost": {"schema": {"type": "string"}, "description": "USD"},
                "x-gesso-deployment": {"schema": {"type": "string"}},
            },
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ImagesResponse"}}},
        }
    }
    for status in statuses:
        answers[str(status)] = {
            "description": "An error in OpenAI's shape",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        }
    return answers


def _multipart(with_mask: bool) -> dict[str, Any]:
    properties: dict[str, Any] = {
        **_OPENAI_FIELDS,
        "image": {"type": "string", "format": "binary"},
        "image[]": {"type": "array", "items": {"type": "string", "format": "binary"}},
    }
    if with_mask:
        properties["mask"] = {"type": "string", "format": "binary"}
    return {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["model"],
                    "properties": properties,
                    "additionalProperties": True,
                }
            }
        },
    }


def spec(model_names: list[str]) -> dict[str, Any]:
    errors = (400, 401, 403, 404, 408, 409, 413, 422, 429, 502, 504)
    # an Idempotency-Key runs the request once for the caller's key (409: the first still runs, or its stored
    # answer is lost; 422: another body); Cache-Control: no-cache skips the exact cache's lookup, no-store its keeping
    headers = [
        {"name": "Idempotency-Key", "in": "header", "required": False,
         "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[ -~]+$"}},
        {"name": "Cache-Control", "in": "header", "required": False, "schema": {"type": "string"}},
    ]  # fmt: skip
    generation = {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["model"],
                    "properties": {**_OPENAI_FIELDS, "model": {"type": "string", "enum": model_names}},
                    "additionalProperties": True,
                    "description": "Other fields are the model's own parameters, validated as in the SDK",
                }
            }
        },
    }
    paths: dict[str, Any] = {}
    for prefix in ("", "/v1"):
        paths[f"{prefix}/images/generations"] = {
            "post": {
                "summary": "Generate images",
                "requestBody": generation,
                "responses": _answers(*errors),
                "parameters": headers,
            }
        }
        paths[f"{prefix}/images/edits"] = {
            "post": {
                "summary": "Edit an image",
                "requestBody": _multipart(True),
                "responses": _answers(*errors),
                "parameters": headers,
            }
        }
        paths[f"{prefix}/images/variations"] = {
            "post": {"summary": "Variations of an image", "requestBody": _multipart(False),
                     "responses": _answers(*errors), "parameters": headers}
        }  # fmt: skip
        paths[f"{prefix}/models"] = {
            "get": {
                "summary": "The configured model names",
                "responses": {"200": {"description": "OpenAI's list", "content": {"application/json": {"schema": {
                    "type": "object", "properties": {"object": {"const": "list"}, "data": {"type": "array"}}}}}},
                    "401": {"description": "No or a wrong key", "content": {"application/json": {
                        "schema": {"$ref": "#/components/schemas/Error"}}}}},
            }
        }  # fmt: skip
    probes = (
        ("/health/liveliness", "Alive"),
        ("/health/readiness", "Ready: the database answers"),
        ("/health", "Each deployment's health (litellm's shape; paid only when allowed and asked)"),
    )
    for path, summary in (*probes, ("/metrics", "Prometheus metrics"), ("/openapi.json", "This document")):
        paths[path] = {"get": {"summary": summary, "responses": {"200": {"description": summary}}}}
    paths.update(_key_paths())
    return {
        "openapi": "3.1.0",
        "info": {"title": "gesso proxy", "version": __version__},
        "paths": paths,
        "components": {
            "schemas": {"ImagesResponse": _IMAGES, "Error": _ERROR},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


_KEY_FIELDS = {
    "key_alias": {"type": "string"},
    "models": {"type": "array", "items": {"type": "string"}},
    "max_budget": {"type": "number", "minimum": 0, "maximum": 1e9},
    "budget_duration": {"type": "string", "examples": ["30d"]},
    "duration": {"type": "string", "examples": ["30d"]},
    "rpm_limit": {"type": "integer", "minimum": 0, "maximum": 2**31 - 1},
    "ipm_limit": {"type": "integer", "minimum": 0, "maximum": 2**31 - 1},
    "metadata": {"type": "object"},
    "blocked": {"type": "boolean"},
    "team_id": {"type": "string"},
    "user_id": {"type": "string"},
}
#: the budget and limit fields of a team, a user and a customer
_LIMITS = {name: _KEY_FIELDS[name] for name in ("max_budget", "budget_duration", "rpm_limit", "ipm_limit")}


def _key_paths() -> dict[str, Any]:
    """The key, spend, team, user and customer API (gesso.proxy.keys and gesso.proxy.governance)."""

    def json_body(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
        schema = {"type": "object", "properties": properties, "additionalProperties": False}
        if required:
            schema["required"] = list(required)
        return {"required": True, "content": {"application/json": {"schema": schema}}}

    def answers() -> dict[str, Any]:
        found: dict[str, Any] = {"200": {"description": "OK", "content": {"application/json": {"schema": {}}}}}
        for status in (400, 401, 403, 404):
            found[str(status)] = {
                "description": "An error in OpenAI's shape",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
            }
        found["501"] = {
            "description": "This proxy has no database (general_settings.database_url), so no keys",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        }
        return found

    def query(*names: str) -> list[dict[str, Any]]:
        return [{"name": n, "in": "query", "required": False, "schema": {"type": "string"}} for n in names]

    keyed = {"key": {"type": "string"}}
    return {
        "/cache/purge": {"post": {"summary": "Remove exact-cache entries (of a model name, older than a duration)",
                                  "responses": answers(), "requestBody": json_body(
            {"model": {"type": "string"}, "older_than": {"type": "string"}})}},
        "/key/generate": {"post": {"summary": "Make a virtual key (shown once)", "responses": answers(),
                                   "requestBody": json_body({**keyed, **_KEY_FIELDS})}},
        "/key/info": {"get": {"summary": "A key's settings and spend", "parameters": query("key"),
                              "responses": answers()}},
        "/key/update": {"post": {"summary": "Change a key", "responses": answers(),
                                 "requestBody": json_body({**keyed, **_KEY_FIELDS}, ("key",))}},
        "/key/delete": {"post": {"summary": "Delete keys", "responses": answers(), "requestBody": json_body(
            {"keys": {"type": "array", "items": {"type": "string"}},
             "key_aliases": {"type": "array", "items": {"type": "string"}}})}},
        "/key/block": {"post": {"summary": "Refuse a key (401 key_blocked) until it is unblocked",
                                "responses": answers(), "requestBody": json_body(keyed, ("key",))}},
        "/key/unblock": {"post": {"summary": "Let a blocked key in again", "responses": answers(),
                                  "requestBody": json_body(keyed, ("key",))}},
        "/key/list": {"get": {"summary": "Every key", "responses": answers(),
                              "parameters": query("page", "size", "key_alias", "return_full_object")}},
        "/spend/logs": {"get": {"summary": "Spend-log rows", "responses": answers(),
                                "parameters": query("api_key", "model", "start_date", "end_date", "limit")}},
        "/spend/report": {"get": {"summary": "Totals by day, and key and model or one dimension",
                                  "responses": answers(), "parameters": query("start_date", "end_date", "group_by")}},
        **_governance_paths(json_body, answers, query),
    }  # fmt: skip


def _governance_paths(json_body: Any, answers: Any, query: Any) -> dict[str, Any]:
    text, texts = {"type": "string"}, {"type": "array", "items": {"type": "string"}}
    role = {"enum": ["admin", "user"]}
    member = {"type": "object", "properties": {"user_id": text, "user_email": text, "role": role},
              "required": ["user_id"], "additionalProperties": False}  # fmt: skip
    team = {"team_id": text, "team_alias": text, "models": texts, "metadata": {"type": "object"},
            "blocked": {"type": "boolean"}, **_LIMITS}  # fmt: skip
    user = {"user_id": text, "user_email": text, "user_role": {"enum": ["proxy_admin", "internal_user",
            "internal_user_viewer"]}, "models": texts, "metadata": {"type": "object"}, **_LIMITS}  # fmt: skip
    customer = {"user_id": text, "alias": text, "blocked": {"type": "boolean"}, "metadata": {"type": "object"},
                **_LIMITS}  # fmt: skip
    budget_in_team = {"max_budget_in_team": _KEY_FIELDS["max_budget"]}

    def post(summary: str, properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
        return {"post": {"summary": summary, "responses": answers(), "requestBody": json_body(properties, required)}}

    def get(summary: str, *names: str) -> dict[str, Any]:
        return {"get": {"summary": summary, "responses": answers(), "parameters": query(*names)}}

    return {
        "/team/new": post("Make a team", {**team, "members_with_roles": {"type": "array", "items": member}}),
        "/team/info": get("A team, its members and keys", "team_id"),
        "/team/update": post("Change a team", team, ("team_id",)),
        "/team/delete": post("Delete teams and their keys", {"team_ids": texts}, ("team_ids",)),
        "/team/list": get("The teams", "page", "page_size"),
        "/team/block": post("Refuse a team's keys (401 team_blocked)", {"team_id": text}, ("team_id",)),
        "/team/unblock": post("Let a team's keys in again", {"team_id": text}, ("team_id",)),
        "/team/member_add": post("Add members", {"team_id": text, "member": member, **budget_in_team},
                                 ("team_id", "member")),
        "/team/member_update": post("Change a member", {"team_id": text, "user_id": text, "role": role,
                                                        **budget_in_team}, ("team_id", "user_id")),
        "/team/member_delete": post("Remove a member", {"team_id": text, "user_id": text}, ("team_id", "user_id")),
        "/user/new": post("Make an internal user (and a key of theirs)",
                          {**user, "teams": texts, "auto_create_key": {"type": "boolean"}}),
        "/user/info": get("A user and their keys", "user_id"),
        "/user/update": post("Change a user", user, ("user_id",)),
        "/user/delete": post("Delete users and their keys", {"user_ids": texts}, ("user_ids",)),
        "/user/list": get("The users", "page", "page_size", "team_id"),
        "/customer/new": post("Make an end customer", customer, ("user_id",)),
        "/customer/info": get("An end customer", "end_user_id"),
        "/customer/update": post("Change an end customer", customer, ("user_id",)),
        "/customer/delete": post("Delete end customers", {"user_ids": texts}, ("user_ids",)),
        "/customer/list": get("The end customers", "page", "page_size"),
        "/customer/block": post("Refuse end customers (403 customer_blocked)", {"user_ids": texts}, ("user_ids",)),
        "/customer/unblock": post("Let end customers in again", {"user_ids": texts}, ("user_ids",)),
    }  # fmt: skip
