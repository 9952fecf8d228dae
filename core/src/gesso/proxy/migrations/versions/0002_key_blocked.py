"""A key's ``blocked`` flag (litellm's ``/key/block`` and ``/key/unblock``): existing keys are not blocked.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # the server default fills the rows already there (and any row an older replica inserts during a rollout)
    op.add_column("gesso_keys", sa.Column("blocked", sa.Boolean, nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("gesso_keys") as batch:  # SQLite rebuilds the table
        batch.drop_column("blocked")
