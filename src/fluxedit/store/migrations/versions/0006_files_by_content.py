"""files by content: an index on (owner, sha256) for the lookup that stores identical inputs once

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_files_owner_sha256", "files", ["owner_key_id", "sha256"])


def downgrade() -> None:
    op.drop_index("ix_files_owner_sha256", table_name="files")
