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

if TYPE_CHECKING:  # "import x as x": what a type checker takes for the package's exports (``__all__`` is built)
    from typing import Any

    from gesso.api import aimage_edit as aimage_edit
    from gesso.api import aimage_generation as aimage_generation
    from gesso.api import aimage_variation as aimage_variation
    from gesso.api import image_edit as image_edit
    from gesso.api import image_generation as image_generation
    from gesso.api import image_variation as image_variation
    from gesso.boundary import Untrusted as Untrusted
    from gesso.bulk import batch as batch
    from gesso.hookspecs import hookimpl as hookimpl
    from gesso.plugins import get_plugin_manager as get_plugin_manager
    from gesso.plugins import register_plugin as register_plugin
    from gesso.plugins import unregister_plugin as unregister_plugin
    from gesso.provider import Provider as Provider
    from gesso.types import ImageData as ImageData
    from gesso.types import ImageResponse as ImageResponse
    from gesso.types import Model as Model

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


#: submodules the docs reach as ``gesso.<name>`` after ``import gesso`` (imported on first use, as the names above)
_SUBMODULES = frozenset({"api", "cache", "errors", "pricing", "types"})


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"gesso.{name}")
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'gesso' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


__all__ = ["__version__", "errors", *_LAZY]
