"""gesso's OpenAI-compatible proxy (``gesso serve``): a litellm ``config.yaml`` served as OpenAI's Images API.

Installed with the ``proxy`` extra (``pip install 'gesso-core[proxy]'``): Starlette on uvicorn, PyYAML and
python-multipart. :mod:`gesso.proxy.config` reads the config, :mod:`gesso.proxy.router` spreads calls over
deployments, :mod:`gesso.proxy.app` is the ASGI app, :mod:`gesso.proxy.serve` the command.
"""
