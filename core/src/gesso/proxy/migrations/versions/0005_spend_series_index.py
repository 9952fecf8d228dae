"""An index that covers the admin UI's overview (its plots' counts and latencies by time): the database reads
the index alone, not the rows with their prompts.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

COLUMNS = ["created_at", "model_name", "status", "images", "cost", "latency_ms"]


def upgrade() -> None:
    op.create_index("ix_gesso_spend_logs_series", "gesso_spend_logs", COLUMNS)


def downgrade() -> None:
    op.drop_index("ix_gesso_spend_logs_series", table_name="gesso_spend_logs")
