"""Initial profile schema: users, folded posts, per-user term counts, document frequencies, N.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

ID_CHARS = 255
TERM_CHARS = 64


def upgrade() -> None:
    op.create_table(
        "profile_users",
        sa.Column("user_id", sa.String(ID_CHARS), primary_key=True),
        sa.Column("n_posts", sa.Integer(), nullable=False),
    )
    op.create_table(
        "profile_posts",
        sa.Column("post_id", sa.String(ID_CHARS), primary_key=True),
        sa.Column("user_id", sa.String(ID_CHARS), nullable=False),
    )
    op.create_table(
        "profile_user_terms",
        sa.Column("user_id", sa.String(ID_CHARS), primary_key=True),
        sa.Column("term", sa.String(TERM_CHARS), primary_key=True),
        sa.Column("tf", sa.Integer(), nullable=False),
    )
    op.create_table(
        "profile_terms",
        sa.Column("term", sa.String(TERM_CHARS), primary_key=True),
        sa.Column("df", sa.Integer(), nullable=False),
    )
    corpus = op.create_table(
        "profile_corpus",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("n_users", sa.Integer(), nullable=False),
        sa.CheckConstraint("id = 1", name="profile_corpus_single_row"),
    )
    op.bulk_insert(corpus, [{"id": 1, "n_users": 0}])


def downgrade() -> None:
    for table in ("profile_corpus", "profile_terms", "profile_user_terms", "profile_posts", "profile_users"):
        op.drop_table(table)
