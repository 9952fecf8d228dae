"""Teams, internal users, team members and end customers, each with a budget row (``gesso_budgets``); keys gain
their team, their owner and an images-per-minute limit; a reservation says whether it holds a key's budget or a
budget row's; spend rows gain the key's team and owner.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

WHEN = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "gesso_budgets",
        sa.Column("budget_id", sa.String(64), primary_key=True),
        sa.Column("max_budget", sa.Float),
        sa.Column("budget_duration", sa.String(16)),
        sa.Column("budget_reset_at", WHEN),
        sa.Column("spend", sa.Float, nullable=False),
        sa.Column("reserved", sa.Float, nullable=False),
        sa.Column("rpm_limit", sa.Integer),
        sa.Column("ipm_limit", sa.Integer),
        sa.Column("created_at", WHEN, nullable=False),
        sa.Column("updated_at", WHEN, nullable=False),
    )
    op.create_table(
        "gesso_teams",
        sa.Column("team_id", sa.String(256), primary_key=True),
        sa.Column("team_alias", sa.String(256), unique=True),
        sa.Column("models", sa.JSON, nullable=False),
        sa.Column("metadata", sa.JSON, nullable=False),
        sa.Column("blocked", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("budget_id", sa.String(64), nullable=False),
        sa.Column("created_at", WHEN, nullable=False),
        sa.Column("updated_at", WHEN, nullable=False),
    )
    op.create_table(
        "gesso_users",
        sa.Column("user_id", sa.String(256), primary_key=True),
        sa.Column("user_email", sa.String(256)),
        sa.Column("user_role", sa.String(32), nullable=False),
        sa.Column("models", sa.JSON, nullable=False),
        sa.Column("metadata", sa.JSON, nullable=False),
        sa.Column("budget_id", sa.String(64), nullable=False),
        sa.Column("created_at", WHEN, nullable=False),
        sa.Column("updated_at", WHEN, nullable=False),
    )
    op.create_table(
        "gesso_team_members",
        sa.Column("team_id", sa.String(256), primary_key=True),
        sa.Column("user_id", sa.String(256), primary_key=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("budget_id", sa.String(64), nullable=False),
        sa.Column("created_at", WHEN, nullable=False),
    )
    op.create_index("ix_gesso_team_members_user_id", "gesso_team_members", ["user_id"])
    op.create_table(
        "gesso_customers",
        sa.Column("user_id", sa.String(256), primary_key=True),
        sa.Column("alias", sa.String(256)),
        sa.Column("blocked", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("metadata", sa.JSON, nullable=False),
        sa.Column("implicit", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("budget_id", sa.String(64), nullable=False),
        sa.Column("created_at", WHEN, nullable=False),
        sa.Column("updated_at", WHEN, nullable=False),
    )
    for name, column in (("team_id", sa.String(256)), ("user_id", sa.String(256))):
        op.add_column("gesso_keys", sa.Column(name, column))
        op.create_index(f"ix_gesso_keys_{name}", "gesso_keys", [name])
        op.add_column("gesso_spend_logs", sa.Column(name, column))
        op.create_index(f"ix_gesso_spend_logs_{name}", "gesso_spend_logs", [name])
    op.add_column("gesso_keys", sa.Column("ipm_limit", sa.Integer))
    op.create_index("ix_gesso_spend_logs_user", "gesso_spend_logs", ["user"])
    # the server default fills the leases already there (each holds a key's budget)
    op.add_column("gesso_reservations", sa.Column("level", sa.String(8), nullable=False, server_default="key"))


def downgrade() -> None:
    with op.batch_alter_table("gesso_reservations") as batch:  # SQLite rebuilds the table
        batch.drop_column("level")
    op.drop_index("ix_gesso_spend_logs_user", table_name="gesso_spend_logs")
    for name in ("team_id", "user_id"):
        op.drop_index(f"ix_gesso_spend_logs_{name}", table_name="gesso_spend_logs")
        op.drop_index(f"ix_gesso_keys_{name}", table_name="gesso_keys")
    with op.batch_alter_table("gesso_spend_logs") as batch:
        batch.drop_column("team_id")
        batch.drop_column("user_id")
    with op.batch_alter_table("gesso_keys") as batch:
        batch.drop_column("team_id")
        batch.drop_column("user_id")
        batch.drop_column("ipm_limit")
    op.drop_index("ix_gesso_team_members_user_id", table_name="gesso_team_members")
    for table in ("gesso_customers", "gesso_team_members", "gesso_users", "gesso_teams", "gesso_budgets"):
        op.drop_table(table)
