"""Idempotency keys and the exact cache: each request's idempotency key and what became of it
(gesso_idempotency), the cache's entries (gesso_cache), and two spend-log columns for an answer served again from
what was stored (``served_from``, ``replay_of``).

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "gesso_idempotency",
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column("idempotency_key", sa.String(255), primary_key=True),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("request_id", sa.String(32), nullable=False),
        sa.Column("state", sa.String(8), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("beat_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), index=True),
        sa.Column("answer", sa.JSON),
    )
    op.create_table(
        "gesso_cache",
        sa.Column("cache_key", sa.String(64), primary_key=True),
        sa.Column("model_name", sa.String(256), nullable=False, index=True),
        sa.Column("deployment", sa.String(256), nullable=False),
        sa.Column("request_id", sa.String(32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, index=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False, index=True),
        sa.Column("answer", sa.JSON, nullable=False),
    )
    with op.batch_alter_table("gesso_spend_logs") as batch:
        batch.add_column(sa.Column("served_from", sa.String(16)))
        batch.add_column(sa.Column("replay_of", sa.String(32)))


def downgrade() -> None:
    with op.batch_alter_table("gesso_spend_logs") as batch:
        batch.drop_column("replay_of")
        batch.drop_column("served_from")
    op.drop_table("gesso_cache")
    op.drop_table("gesso_idempotency")
