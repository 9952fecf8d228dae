"""Budget leases: a reservation may be a replica's lease on a slice of a key's budget, which it renews while it
holds it; ``expires_at`` is when any replica may release it (its holder died). Per-call reservations keep it
null (released after an hour, as before).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("gesso_reservations", sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ix_gesso_reservations_expires_at", "gesso_reservations", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_gesso_reservations_expires_at", table_name="gesso_reservations")
    with op.batch_alter_table("gesso_reservations") as batch:  # SQLite rebuilds the table
        batch.drop_column("expires_at")
