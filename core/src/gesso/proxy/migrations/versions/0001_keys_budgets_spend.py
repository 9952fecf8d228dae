"""Virtual keys, budget reservations, rate windows and spend logs.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

WHEN = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "gesso_keys",
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column("key_name", sa.String(32), nullable=False),
        sa.Column("key_alias", sa.String(256), unique=True),
        sa.Column("models", sa.JSON, nullable=False),
        sa.Column("max_budget", sa.Float),
        sa.Column("budget_duration", sa.String(16)),
        sa.Column("budget_reset_at", WHEN),
        sa.Column("spend", sa.Float, nullable=False),
        sa.Column("reserved", sa.Float, nullable=False),
        sa.Column("expires", WHEN),
        sa.Column("rpm_limit", sa.Integer),
        sa.Column("metadata", sa.JSON, nullable=False),
        sa.Column("created_at", WHEN, nullable=False),
        sa.Column("updated_at", WHEN, nullable=False),
    )
    op.create_table(
        "gesso_reservations",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("token_hash", sa.String(64), nullable=False, index=True),
        sa.Column("amount", sa.Float, nullable=False),
        sa.Column("created_at", WHEN, nullable=False),
    )
    op.create_table(
        "gesso_rate_windows",
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column("window", sa.BigInteger, primary_key=True),
        sa.Column("count", sa.Integer, nullable=False),
    )
    op.create_table(
        "gesso_spend_logs",
        sa.Column("request_id", sa.String(32), primary_key=True),
        sa.Column("created_at", WHEN, nullable=False, index=True),
        sa.Column("token_hash", sa.String(64), index=True),
        sa.Column("key_alias", sa.String(256)),
        sa.Column("route", sa.String(32), nullable=False),
        sa.Column("model_name", sa.String(256), index=True),
        sa.Column("deployment", sa.String(256)),
        sa.Column("model_id", sa.String(2048)),
        sa.Column("images", sa.Integer, nullable=False),
        sa.Column("cost", sa.Float, nullable=False),
        sa.Column("latency_ms", sa.Float, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("status_code", sa.Integer, nullable=False),
        sa.Column("error_type", sa.String(64)),
        sa.Column("user", sa.String(256)),
        sa.Column("prompt", sa.Text),
    )


def downgrade() -> None:
    for table in ("gesso_spend_logs", "gesso_rate_windows", "gesso_reservations", "gesso_keys"):
        op.drop_table(table)
