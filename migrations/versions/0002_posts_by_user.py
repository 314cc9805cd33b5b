"""Index folded posts by user, so erasing a user (`ProfileStore.forget_user`) finds their posts without a table scan.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_profile_posts_user_id", "profile_posts", ["user_id"])


def downgrade() -> None:
    op.drop_index("ix_profile_posts_user_id", table_name="profile_posts")
