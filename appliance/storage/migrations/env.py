"""Alembic environment: runs on the connection ``init_db`` hands over (SQLite or PostgreSQL)."""

from alembic import context
from sqlmodel import SQLModel

from appliance.storage import models  # noqa: F401  (registers the tables)

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=SQLModel.metadata, render_as_batch=True, compare_type=True)
with context.begin_transaction():
    context.run_migrations()
