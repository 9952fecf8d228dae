"""The plugin manager and the model registry, built lazily on first use (never at import).

Plugins come from three places, in this order: gesso's built-in plugins (the Bedrock transport), the
entry-point group ``gesso`` of installed distributions, and objects a host application registers
in-process with :func:`register_plugin`. A plugin that fails to import or to register is skipped and
reported (``gesso plugins`` shows the error); it never breaks the host.

``GESSO_PLUGINS`` restricts which distributions load: a comma-separated list of distribution names;
set but empty means none. Unset means all installed.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib.metadata
import logging
import os
import re
import threading
import warnings
from collections.abc import Iterable
from typing import Any

import attrs
import pluggy

from gesso import hookspecs
from gesso.errors import ModelIdWarning, PluginConflictError, UnknownModelError
from gesso.params import short
from gesso.types import Model

logger = logging.getLogger("gesso.plugins")

ENTRY_POINT_GROUP = "gesso"
PLUGINS_ENV = "GESSO_PLUGINS"

#: Geographic prefixes of system-defined (cross-Region) inference profile ids.
PROFILE_PREFIXES = ("us-gov.", "us.", "eu.", "apac.", "jp.", "au.", "ca.", "global.")

#: Families whose models are active on Bedrock, suggested when a model is retired and they are missing.
ACTIVE_FAMILIES = (("gesso-bedrock-stability", "Stable Image Ultra v1:1, Stable Image Core v1:1, SD3.5 Large"),)

#: First-party families: an unknown model id matching a prefix names the distribution to install.
KNOWN_FAMILIES = (
    ("amazon.nova-canvas", "gesso-bedrock-nova"),
    ("amazon.titan-image-generator", "gesso-bedrock-titan"),
    ("stability.", "gesso-bedrock-stability"),
)

#: a provider prefix written twice (``stability.stability.``), at the start or after a profile prefix
_DOUBLED_PREFIX = re.compile(r"(^|\.)([a-z0-9-]+)\.\2\.")


@attrs.define
class PluginInfo:
    """One plugin as loaded: its name (the distribution, for entry points), version, the plugin
    object (``None`` if it failed), the load ``error`` if any, and whether it ships with gesso."""

    name: str
    version: str | None = None
    plugin: Any = None
    error: str | None = None
    builtin: bool = False
    models: list[str] = attrs.field(factory=list)


def canonical_name(name: str) -> str:
    """A distribution name normalised as in PEP 503: ``Gesso_Bedrock.Nova`` -> ``gesso-bedrock-nova``."""
    return re.sub(r"[-_.]+", "-", name).lower().strip()


def allowed_distributions() -> set[str] | None:
    raw = os.environ.get(PLUGINS_ENV)
    if raw is None:
        return None
    return {canonical_name(part) for part in raw.split(",") if part.strip()}


class Registry:
    """Every model id the loaded plugins own, mapped to its :class:`~gesso.types.Model`."""

    def __init__(self, models: Iterable[Model]) -> None:
        self.models: list[Model] = list(models)
        self.by_id: dict[str, Model] = {mid: m for m in self.models for mid in m.ids}

    def get(self, model_id: str) -> Model | None:
        return self.by_id.get(model_id)

    def resolve(self, model: str, *, base_model: str | None = None) -> tuple[Model, str, str | None]:
        """Resolve a caller's model string to (registration, id as named, invoke target or None).

        Accepts ``bedrock/<id>``, ``bedrock/invoke/<id>`` and a bare ``<id>``; also foundation-model
        and system inference-profile ARNs, whose model is readable from the ARN (the ARN is then the
        invoke target), and any other ARN when ``base_model`` names the family's model id. Raises
        :class:`UnknownModelError` otherwise.
        """
        if not isinstance(model, str) or not model.strip():
            got = short(model)
            raise UnknownModelError(f"model must be a non-empty string (got {got})", model=got)
        name = model.strip()
        if name.startswith("bedrock/"):
            name = name[len("bedrock/") :]
            if name.startswith("invoke/"):
                name = name[len("invoke/") :]
        elif "/" in name and not name.startswith("arn:"):
            provider = name.split("/", 1)[0]
            raise UnknownModelError(
                f"Model {model!r}: gesso serves AWS Bedrock models; use 'bedrock/<model id>' "
                f"(the provider prefix {provider!r} is not supported)",
                model=model,
            )
        if name.startswith("arn:"):
            if base_model:
                found, base_name, _ = self.resolve(base_model)
                return found, base_name, name
            return self._resolve_arn(name, original=model)
        found = self.by_id.get(name)
        if found is None:
            name = self._undoubled(name, original=model)
            found = self.by_id.get(name)
        if found is None:
            raise self.unknown(name)
        return found, name, None

    def _undoubled(self, name: str, *, original: str) -> str:
        """litellm's docs spell ``stability.stability.sd3-large-v1:0``: a provider prefix written twice is
        read once, with a warning naming the real id (only when that id is known)."""
        single = _DOUBLED_PREFIX.sub(r"\1\2.", name, count=1)
        if single != name and single in self.by_id:
            warnings.warn(
                f"model {original!r} names its provider twice; using {single!r}, the real id (write it that way)",
                ModelIdWarning,
                stacklevel=5,  # the caller of image_generation
            )
            return single
        return name

    def _resolve_arn(self, arn: str, *, original: str) -> tuple[Model, str, str | None]:
        resource = arn.split(":", 5)[-1] if arn.count(":") >= 5 else ""
        kind, _, ident = resource.partition("/")
        if kind in ("foundation-model", "inference-profile") and ident in self.by_id:
            return self.by_id[ident], ident, arn
        if kind in ("foundation-model", "inference-profile") and ident:
            raise self.unknown(ident)
        raise UnknownModelError(
            f"Model {original!r} is an ARN that does not name its model, so gesso cannot tell which request "
            "format to use. Pass the ARN as model_id and name the model family in model, e.g. "
            "model='bedrock/amazon.nova-canvas-v1:0', model_id='<the ARN>' (or keep the ARN as model and add "
            "base_model='amazon.nova-canvas-v1:0')",
            model=original,
        )

    def alternatives(self, model: Model) -> str:
        """A sentence naming active models that can stand in for ``model`` (or what to install)."""
        # a text-to-image model is best replaced by text-to-image models; otherwise any shared capability
        wanted = {"text_to_image"} if "text_to_image" in model.capabilities else set(model.capabilities)
        shared = [
            m.id for m in self.models if m.lifecycle.status == "active" and m.id != model.id and m.capabilities & wanted
        ]
        if shared:
            return f"Active alternatives installed: {', '.join(sorted(shared))}."
        installed = {m.distribution for m in self.models}
        missing = [f"pip install {dist} ({names})" for dist, names in ACTIVE_FAMILIES if dist not in installed]
        if missing:
            return "No active alternative is installed; for example " + "; ".join(missing) + "."
        return "No active alternative is installed."

    def unknown(self, model_id: str) -> UnknownModelError:
        base = strip_profile_prefix(model_id)
        for prefix, distribution in KNOWN_FAMILIES:
            offered = [
                mid
                for m in self.models
                if canonical_name(m.distribution or "") == distribution
                for mid in usable_ids(m)
            ]
            if base.startswith(prefix) and offered:
                closest = difflib.get_close_matches(model_id, offered, n=3, cutoff=0.6)
                hint = f"the closest: {', '.join(closest)}" if closest else f"its models: {', '.join(offered)}"
                return UnknownModelError(
                    f"Model {model_id!r} is not one of the models {distribution} offers; {hint} "
                    "(gesso models lists every installed id)",
                    model=model_id,
                )
            if base.startswith(prefix):
                return UnknownModelError(
                    f"Model {model_id!r} is not provided by any installed gesso plugin. "
                    f"Install its family with: pip install {distribution}",
                    model=model_id,
                    install_hint=f"pip install {distribution}",
                )
        known = ", ".join(sorted(m.id for m in self.models)) or "none (no family plugin is installed)"
        return UnknownModelError(
            f"Model {model_id!r} is not provided by any installed gesso plugin. Installed models: {known}",
            model=model_id,
        )


def usable_ids(model: Model) -> tuple[str, ...]:
    """The ids a caller can use: all of them, but for a model offered only through inference profiles,
    only the profile ids (its base id is claimed so the error can say which profile to use)."""
    if "inference_profile_only" in model.capabilities:
        return tuple(mid for mid in model.ids if mid != model.id)
    return model.ids


def strip_profile_prefix(model_id: str) -> str:
    for prefix in PROFILE_PREFIXES:
        if model_id.startswith(prefix):
            return model_id[len(prefix) :]
    return model_id


class _State:
    """The process-wide plugin manager, the plugins it loaded, and the registry built from them."""

    def __init__(self) -> None:
        self.manager = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self.manager.add_hookspecs(hookspecs)
        self.plugins: list[PluginInfo] = []
        self.registry: Registry | None = None
        self._load_builtins()
        self._load_entry_points()

    def _load_builtins(self) -> None:
        from gesso import bedrock

        self._register(PluginInfo(name="gesso.bedrock", version=_version("gesso-core"), builtin=True), bedrock)

    def _load_entry_points(self) -> None:
        allowed = allowed_distributions()
        seen: set[tuple[str, str]] = set()
        found = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
        # load in a stable order, so hook call order does not depend on sys.path or install order
        for ep in sorted(found, key=lambda ep: (canonical_name(ep.dist.name if ep.dist else ep.name), ep.name)):
            dist_name = ep.dist.name if ep.dist is not None else ep.name
            key = canonical_name(dist_name)
            if (allowed is not None and key not in allowed) or (key, ep.name) in seen:
                continue
            seen.add((key, ep.name))
            info = PluginInfo(name=dist_name, version=ep.dist.version if ep.dist is not None else None)
            try:
                plugin = ep.load()
            except Exception as exc:  # a broken plugin must never break the host
                self._record_failure(info, f"import failed: {type(exc).__name__}: {exc}")
                continue
            self._register(info, plugin)

    def _register(self, info: PluginInfo, plugin: Any) -> None:
        name = info.name if self.manager.get_plugin(info.name) is None else f"{info.name}#{len(self.plugins)}"
        try:
            self.manager.register(plugin, name=name)
            unknown = [
                hook.name
                for hook in self.manager.get_hookcallers(plugin) or []
                if not hook.has_spec() and hook.name.startswith("gesso_")
            ]
            if unknown:
                self.manager.unregister(plugin)
                raise ValueError(f"unknown hook(s) {', '.join(sorted(unknown))}; is a name misspelt?")
        except Exception as exc:
            self._record_failure(info, f"registration failed: {type(exc).__name__}: {exc}")
            return
        info.plugin = plugin
        self.plugins.append(info)
        self.registry = None

    def _record_failure(self, info: PluginInfo, error: str) -> None:
        info.error = error
        self.plugins.append(info)
        logger.warning("gesso plugin %s was skipped: %s", info.name, error)

    def build_registry(self) -> Registry:
        claims: dict[str, list[str]] = {}
        models: list[Model] = []
        for info in self.plugins:
            if info.plugin is None:
                continue
            info.models = []
            impls = [
                impl for impl in self.manager.hook.gesso_register_models.get_hookimpls() if impl.plugin is info.plugin
            ]
            for impl in impls:
                try:
                    declared = list(impl.function() or [])
                    bad = [m for m in declared if not isinstance(m, Model)]
                    if bad:
                        raise TypeError(f"gesso_register_models must return gesso.types.Model objects, got {bad[0]!r}")
                except Exception as exc:
                    info.error = f"gesso_register_models failed: {type(exc).__name__}: {exc}"
                    logger.warning("gesso plugin %s declared no models: %s", info.name, info.error)
                    continue
                for model in declared:
                    model = attrs.evolve(model, distribution=info.name)
                    models.append(model)
                    for model_id in dict.fromkeys(model.ids):
                        claims.setdefault(model_id, []).append(info.name)
                        info.models.append(model_id)
        conflicts = {mid: sorted(dists) for mid, dists in claims.items() if len(dists) > 1}
        if conflicts:
            raise PluginConflictError(conflicts)
        return Registry(models)


_lock = threading.RLock()
_state: _State | None = None


def _get_state() -> _State:
    global _state
    state = _state
    if state is None:
        with _lock:
            if _state is None:
                _state = _State()
            state = _state
    return state


def get_plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager (built on first use)."""
    return _get_state().manager


def get_registry() -> Registry:
    """The model registry (built on first use; rebuilt after :func:`register_plugin`)."""
    state = _get_state()
    registry = state.registry
    if registry is None:
        with _lock:
            if state.registry is None:
                state.registry = state.build_registry()
            registry = state.registry
    return registry


def register_plugin(plugin: Any, name: str | None = None) -> None:
    """Register a plugin object (a module, class or instance with ``@gesso.hookimpl`` functions)
    in-process. Hosts use this for plugins that are not installed as distributions."""
    with _lock:
        state = _get_state()
        label = name or getattr(plugin, "__name__", None) or type(plugin).__name__
        state._register(PluginInfo(name=label), plugin)
        if state.plugins[-1].error:
            raise ValueError(f"plugin {label} could not be registered: {state.plugins[-1].error}")


def unregister_plugin(plugin: Any) -> None:
    """Remove a plugin registered in-process."""
    with _lock:
        state = _get_state()
        state.manager.unregister(plugin)
        state.plugins = [p for p in state.plugins if p.plugin is not plugin]
        state.registry = None


def reset() -> None:
    """Forget every loaded plugin; the next use loads them again (honouring ``GESSO_PLUGINS``)."""
    global _state
    with _lock:
        _state = None


def list_plugins(*, include_builtin: bool = False) -> list[dict[str, Any]]:
    """What ``gesso plugins`` prints: each plugin's name, version, hooks, model ids and load error."""
    state = _get_state()
    with contextlib.suppress(PluginConflictError):
        get_registry()  # a conflict still lists what loaded; it is reported where models are used
    rows = []
    for info in state.plugins:
        if info.builtin and not include_builtin:
            continue
        hooks = sorted(h.name for h in state.manager.get_hookcallers(info.plugin) or []) if info.plugin else []
        rows.append(
            {"name": info.name, "version": info.version, "hooks": hooks, "models": info.models, "error": info.error}
        )
    return rows


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None
