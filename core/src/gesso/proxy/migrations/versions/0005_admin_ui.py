"""The admin UI's: an index that covers its overview (its plots' counts and latencies by time: the database reads
the index alone, not the rows with their prompts), and the sessions signed out before their expiry (a signed
cookie stays valid until it expires unless the proxy remembers that it ended).

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

COLUMNS = ["created_at", "model_name", "status", "images", "cost", "latency_ms"]


def upgrade() -> None:
    op.create_index("ix_gesso_spend_logs_series", "gesso_spend_logs", COLUMNS)
    op.create_table(
        "gesso_ui_signouts",
        sa.Column("session_id", sa.String(64), primary_key=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False, index=True),
    )


def downgrade() -> None:
    op.drop_table("gesso_ui_signouts")
    op.drop_index("ix_gesso_spend_logs_series", table_name="gesso_spend_logs")
