"""gesso: one call, the right image request for any provider's model, checked before anything is sent.

    import gesso
    resp = gesso.image_generation(model="<provider>/<model id>", prompt="A cute baby sea otter")

Providers and model families are plugins. Importing gesso is cheap: the SDK, the plugin machinery and the
providers' libraries load on first use.
"""

from __future__ import annotations

import importlib

from gesso import errors

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing would double the cost of `import gesso`

__version__ = "0.1.0"

if TYPE_CHECKING:
    from typing import Any

    from gesso.api import (
        aimage_edit,
        aimage_generation,
        aimage_variation,
        image_edit,
        image_generation,
        image_variation,
    )
    from gesso.boundary import Untrusted
    from gesso.bulk import batch
    from gesso.hookspecs import hookimpl
    from gesso.plugins import get_plugin_manager, register_plugin, unregister_plugin
    from gesso.provider import Provider
    from gesso.types import ImageData, ImageResponse, Model

_LAZY = {
    "image_generation": "gesso.api",
    "aimage_generation": "gesso.api",
    "image_edit": "gesso.api",
    "aimage_edit": "gesso.api",
    "image_variation": "gesso.api",
    "aimage_variation": "gesso.api",
    "batch": "gesso.bulk",
    "hookimpl": "gesso.hookspecs",
    "register_plugin": "gesso.plugins",
    "unregister_plugin": "gesso.plugins",
    "get_plugin_manager": "gesso.plugins",
    "ImageResponse": "gesso.types",
    "ImageData": "gesso.types",
    "Model": "gesso.types",
    "Provider": "gesso.provider",
    "Untrusted": "gesso.boundary",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'gesso' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


__all__ = ["__version__", "errors", *_LAZY]
