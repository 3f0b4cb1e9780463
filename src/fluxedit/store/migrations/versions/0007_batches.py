"""batches: one edit over many images, its predictions linked by batch_id (with their place and input name)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "batches",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("owner_key_id", sa.String(length=32), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("input", sa.JSON(), nullable=False),
        sa.Column("skipped", sa.JSON(), nullable=False),
        sa.Column("base_url", sa.Text(), nullable=False),
        sa.Column("webhook_url", sa.Text(), nullable=True),
        sa.Column("webhook_secret", sa.Text(), nullable=True),
        sa.Column("prediction_webhooks", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["owner_key_id"], ["api_keys.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_batches_owner_created", "batches", ["owner_key_id", "created_at"])
    with op.batch_alter_table("predictions") as table:  # SQLite adds a foreign key only by rebuilding the table
        table.add_column(sa.Column("batch_id", sa.String(length=40), nullable=True))
        table.add_column(sa.Column("batch_index", sa.Integer(), nullable=True))
        table.add_column(sa.Column("batch_name", sa.String(length=255), nullable=True))
        table.create_foreign_key("fk_predictions_batch_id", "batches", ["batch_id"], ["id"])
        table.create_index("ix_predictions_batch", ["batch_id", "batch_index"])


def downgrade() -> None:
    with op.batch_alter_table("predictions") as table:
        table.drop_index("ix_predictions_batch")
        table.drop_constraint("fk_predictions_batch_id", type_="foreignkey")
        table.drop_column("batch_name")
        table.drop_column("batch_index")
        table.drop_column("batch_id")
    op.drop_index("ix_batches_owner_created", table_name="batches")
    op.drop_table("batches")
