"""Alembic environment: runs on the connection ``init_db`` hands over (SQLite or PostgreSQL)."""

from alembic import context
from sqlmodel import SQLModel

from appliance.storage import models  # noqa: F401  (registers the tables)
from appliance.storage.partitions import include_name

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=SQLModel.metadata,
    render_as_batch=True,
    compare_type=True,
    include_name=include_name(connection),  # the models know the partitions' parent only
)
with context.begin_transaction():
    context.run_migrations()
