"""The proxy's schema migrations (Alembic), applied by :func:`gesso.proxy.store.upgrade`."""
