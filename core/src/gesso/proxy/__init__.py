"""gesso's OpenAI-compatible proxy (``gesso serve``): a litellm ``config.yaml`` served as OpenAI's Images API.

Installed with the ``proxy`` extra (``pip install 'gesso-core[proxy]'``): Starlette on uvicorn, PyYAML and
python-multipart. :mod:`gesso.proxy.config` reads the config, :mod:`gesso.proxy.router` spreads calls over
deployments, :mod:`gesso.proxy.app` is the ASGI app (the image routes), :mod:`gesso.proxy.keys` its key API,
:mod:`gesso.proxy.http` what both share (errors, JSON answers, reading a body), :mod:`gesso.proxy.store` and
:mod:`gesso.proxy.ledger` the database and the budgets, :mod:`gesso.proxy.serve` the command.
"""
