"""The Bedrock provider: its model strings, options, targets, lifecycle advice and emulator.

Model strings: ``bedrock/<id>``, ``bedrock/invoke/<id>`` and a bare ``<id>`` (Bedrock is gesso's default
provider); region-prefixed inference-profile ids (``us.amazon.nova-canvas-v1:0``); foundation-model and
system inference-profile ARNs, whose model the ARN names (the ARN is then what is invoked); any other ARN
with ``base_model`` naming the model. litellm's doubled ``stability.stability.`` is read once, with a
warning.
"""

from __future__ import annotations

import contextlib
import difflib
import os
import re
import warnings
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from gesso.errors import InvalidRequestError, ModelIdWarning, UnknownModelError, Violation
from gesso.plugins import canonical_name
from gesso.provider import CliOption, Provider, Resolved
from gesso_bedrock import options

if TYPE_CHECKING:
    from gesso.registry import Registry
    from gesso.types import Model

#: Geographic prefixes of system-defined (cross-Region) inference profile ids.
PROFILE_PREFIXES = ("us-gov.", "us.", "eu.", "apac.", "jp.", "au.", "ca.", "global.")

#: Families whose models are active on Bedrock, suggested when a model is retired and they are missing.
ACTIVE_FAMILIES = (
    ("gesso-bedrock-stability", "Stable Image Ultra v1:1, Stable Image Core v1:1, SD3.5 Large"),
    ("gesso-bedrock-nova2", "Amazon Nova 2 Omni"),
)

#: First-party families: an unknown model id matching a prefix names the distribution to install.
KNOWN_FAMILIES = (
    ("amazon.nova-canvas", "gesso-bedrock-nova"),
    ("amazon.nova-2-omni", "gesso-bedrock-nova2"),
    ("amazon.titan-image-generator", "gesso-bedrock-titan"),
    ("stability.", "gesso-bedrock-stability"),
)

#: the capability tag of a model offered only through cross-Region inference profiles
PROFILE_ONLY = "inference_profile_only"

#: a provider prefix written twice (``stability.stability.``), at the start or after a profile prefix
_DOUBLED_PREFIX = re.compile(r"(^|\.)([a-z0-9-]+)\.\2\.")


def strip_profile_prefix(model_id: str) -> str:
    for prefix in PROFILE_PREFIXES:
        if model_id.startswith(prefix):
            return model_id[len(prefix) :]
    return model_id


class Bedrock(Provider):
    name = "bedrock"
    title = "Bedrock"
    default = True  # every model before providers were plugins was a Bedrock model
    genai_name = "aws.bedrock"  # gen_ai.provider.name in OpenTelemetry's GenAI semantic conventions
    grantable = options.GRANTABLE  # (before the class's own ``options`` shadows the module)
    options = options.OPTIONS
    cli_options = (
        CliOption("--model-id", "model_id", "invoke target: an inference-profile or provisioned-model ARN or id"),
        CliOption("--region", "aws_region_name", "AWS region (aws_region_name)"),
        CliOption("--profile", "aws_profile_name", "AWS shared-config profile (aws_profile_name)"),
        CliOption("--endpoint", "aws_bedrock_runtime_endpoint", "Bedrock Runtime endpoint URL"),
    )
    loggers = ("botocore", "boto3", "urllib3", "s3transfer")
    #: litellm's Bedrock image page writes ``aws_secret_access_id`` in its proxy config example
    config_misspellings = {"aws_secret_access_id": "aws_access_key_id"}

    # -- model strings ------------------------------------------------------------------------------------

    def resolve(self, name: str, registry: Registry, opts: Mapping[str, Any]) -> Resolved:
        original = name
        if name.startswith("invoke/"):
            name = name[len("invoke/") :]
        elif "/" in name and not name.startswith("arn:"):
            prefix = name.split("/", 1)[0]
            raise UnknownModelError(
                f"Model {original!r}: gesso serves AWS Bedrock models; use 'bedrock/<model id>' "
                f"(the provider prefix {prefix!r} is not supported; installed providers: "
                f"{', '.join(registry.providers)})",
                model=original,
            )
        if name.startswith("arn:"):
            base_model = opts.get("base_model")
            if base_model is not None and not isinstance(base_model, str):
                got = type(base_model).__name__
                raise InvalidRequestError([Violation("base_model", f"must be a model id (got {got})")], model=original)
            if base_model:
                base = self.resolve(base_model, registry, {})
                return Resolved(base.model, base.model_name, name)
            return self._resolve_arn(name, registry, original=original)
        found = registry.get(name, provider=self.name)
        if found is None:
            name = self._undoubled(name, registry, original=original)
            found = registry.get(name, provider=self.name)
        if found is None:
            raise self.unknown(name, registry)
        return Resolved(found, name)

    def _undoubled(self, name: str, registry: Registry, *, original: str) -> str:
        """litellm's docs spell ``stability.stability.sd3-large-v1:0``: a provider prefix written twice is
        read once, with a warning naming the real id (only when that id is known)."""
        single = _DOUBLED_PREFIX.sub(r"\1\2.", name, count=1)
        if single != name and registry.get(single, provider=self.name) is not None:
            shown = original if original.startswith("bedrock/") else f"bedrock/{original}"
            warnings.warn(
                f"model {shown!r} names its provider twice; using {single!r}, the real id (write it that way)",
                ModelIdWarning,
                stacklevel=6,  # the caller of image_generation
            )
            return single
        return name

    def _resolve_arn(self, arn: str, registry: Registry, *, original: str) -> Resolved:
        resource = arn.split(":", 5)[-1] if arn.count(":") >= 5 else ""
        kind, _, ident = resource.partition("/")
        found = registry.get(ident, provider=self.name) if ident else None
        if kind in ("foundation-model", "inference-profile") and found is not None:
            return Resolved(found, ident, arn)
        if kind in ("foundation-model", "inference-profile") and ident:
            raise self.unknown(ident, registry)
        raise UnknownModelError(
            f"Model {original!r} is an ARN that does not name its model, so gesso cannot tell which request "
            "format to use. Pass the ARN as model_id and name the model family in model, e.g. "
            "model='bedrock/amazon.nova-canvas-v1:0', model_id='<the ARN>' (or keep the ARN as model and add "
            "base_model='amazon.nova-canvas-v1:0')",
            model=original,
        )

    def unknown(self, name: str, registry: Registry) -> UnknownModelError:
        base = strip_profile_prefix(name)
        ours = [m for m in registry.models if m.provider == self.name]
        for prefix, distribution in KNOWN_FAMILIES:
            offered = [
                mid for m in ours if canonical_name(m.distribution or "") == distribution for mid in self.usable_ids(m)
            ]
            if base.startswith(prefix) and offered:
                closest = difflib.get_close_matches(name, offered, n=3, cutoff=0.6)
                hint = f"the closest: {', '.join(closest)}" if closest else f"its models: {', '.join(offered)}"
                return UnknownModelError(
                    f"Model {name!r} is not one of the models {distribution} offers; {hint} "
                    "(gesso models lists every installed id)",
                    model=name,
                )
            if base.startswith(prefix):
                return UnknownModelError(
                    f"Model {name!r} is not provided by any installed gesso plugin. "
                    f"Install its family with: pip install {distribution}",
                    model=name,
                    install_hint=f"pip install {distribution}",
                )
        known = ", ".join(sorted(m.id for m in ours)) or "none (no family plugin is installed)"
        return UnknownModelError(
            f"Model {name!r} is not provided by any installed gesso plugin. Installed models: {known}", model=name
        )

    def usable_ids(self, model: Model) -> tuple[str, ...]:
        """All of the model's ids, but for a model offered only through inference profiles, only the profile
        ids (its base id is claimed so the error can say which profile to use)."""
        if PROFILE_ONLY in model.capabilities:
            return tuple(mid for mid in model.ids if mid != model.id)
        return model.ids

    # -- options ------------------------------------------------------------------------------------------

    def habit(self, key: str) -> str | None:
        return options.habit(key)

    def deadline(self, target: Any) -> float | None:
        from gesso_bedrock import transport

        return transport.deadline(target)

    def identity(self, target: Any) -> str:
        """The endpoint, the Region, and who signs (the access key id, profile or role; a Bedrock API key by its
        hash), from the call's options or else the environment boto3 reads them from: an answer stored for one
        account or endpoint (the emulator's, say) is never served for another.
        Timeouts, retries and per-call headers are not part of it, nor the port of a loopback endpoint (the
        emulator listens on a new one each run; its credentials tell it apart from AWS)."""
        import hashlib
        import urllib.parse

        creds, env = target.credentials, os.environ
        api_key = creds.api_key or env.get("AWS_BEARER_TOKEN_BEDROCK")
        bearer = hashlib.sha256(api_key.encode()).hexdigest()[:32] if api_key else None
        who: tuple[Any, ...] = (creds.access_key_id, creds.profile_name, creds.role_name,
                                creds.web_identity_token is not None, bearer)  # fmt: skip
        if not creds.explicit_sigv4:  # boto3's default chain: what the environment names
            who += tuple(env.get(name) for name in ("AWS_ACCESS_KEY_ID", "AWS_PROFILE", "AWS_ROLE_ARN"))
        region = target.region or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
        endpoint = target.endpoint_url or env.get("AWS_ENDPOINT_URL_BEDROCK_RUNTIME") or env.get("AWS_ENDPOINT_URL")
        if endpoint:
            parts = urllib.parse.urlsplit(endpoint)
            if parts.hostname in ("127.0.0.1", "localhost", "::1"):
                endpoint = f"{parts.scheme}://{parts.hostname}{parts.path}"
        return repr((target.model_id, endpoint, region, who))

    def secrets(self, opts: Mapping[str, Any]) -> Iterable[str | None]:
        return [opts.get(name) for name in options.SECRET_OPTIONS]

    def target(
        self, resolved: Resolved, opts: Mapping[str, Any], *, timeout: float | None, problems: list[Violation]
    ) -> Any:
        model_id = opts.get("model_id")
        invoked = model_id if model_id is not None else resolved.target_id or resolved.model_name
        return options.target(opts, model_id=invoked, timeout=timeout, problems=problems)

    def check(self, resolved: Resolved, opts: Mapping[str, Any], registry: Registry) -> None:
        model, model_id = resolved.model, opts.get("model_id")
        if isinstance(model_id, str) and model_id and not model_id.startswith("arn:"):
            # a plain id names a model (or its profile): it must be this model, or the body is wrong for it
            named = registry.get(strip_profile_prefix(model_id), provider=self.name)
            if named is None or named.id != model.id:
                raise InvalidRequestError(
                    [Violation("model_id", f"{model_id!r} is not an id of {model.id} or of one of its inference "
                               f"profiles ({', '.join(model.ids)}); an ARN may name anything")],
                    model=resolved.model_name,
                )  # fmt: skip
        if PROFILE_ONLY in model.capabilities and resolved.model_name == model.id and not model_id:
            profiles = ", ".join(f"bedrock/{prefix}{model.id}" for prefix in model.routing_prefixes)
            raise InvalidRequestError(
                [
                    Violation(
                        "model", f"{model.id} is offered only through cross-Region inference profiles: use {profiles}"
                    )
                ],
                model=resolved.model_name,
            )

    # -- lifecycle ----------------------------------------------------------------------------------------

    def advice(self, model: Model, registry: Registry) -> str:
        """A sentence naming active models that can stand in for ``model`` (or what to install): only
        Bedrock's own models, since it names their bare ids, and never an example model."""
        # a text-to-image model is best replaced by text-to-image models; otherwise any shared capability
        wanted = {"text_to_image"} if "text_to_image" in model.capabilities else set(model.capabilities)
        shared = [
            self.usable_ids(m)[0]  # an id it answers to (a profile's, for a model offered only through profiles)
            for m in registry.models
            if m.lifecycle.status == "active"
            and not m.example
            and m.provider == model.provider
            and m.id != model.id
            and m.capabilities & wanted
        ]
        if shared:
            return f"Active alternatives installed: {', '.join(sorted(shared))}."
        installed = {m.distribution for m in registry.models}
        missing = [f"pip install {dist} ({names})" for dist, names in ACTIVE_FAMILIES if dist not in installed]
        if missing:
            return "No active alternative is installed; for example " + "; ".join(missing) + "."
        return "No active alternative is installed."

    # -- emulator -----------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def emulate(self, model: Model, opts: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
        """The emulator on a free loopback port, checking signatures; an application-profile ARN given as
        ``model_id`` is served as ``model``."""
        from gesso_bedrock.emulator import EMULATOR_ACCESS_KEY, EMULATOR_SECRET_KEY, Emulator

        emulator = Emulator(port=0, credentials={EMULATOR_ACCESS_KEY: EMULATOR_SECRET_KEY})
        model_id = opts.get("model_id")
        if isinstance(model_id, str) and model_id.startswith("arn:"):
            emulator.application_profiles[model_id] = model.id
        with emulator:
            yield {
                "aws_bedrock_runtime_endpoint": emulator.url,
                "aws_access_key_id": EMULATOR_ACCESS_KEY,
                "aws_secret_access_key": EMULATOR_SECRET_KEY,
                "aws_region_name": opts.get("aws_region_name") or "us-east-1",
                "aws_profile_name": None,
            }


BEDROCK = Bedrock()
