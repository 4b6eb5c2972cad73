"""Alembic environment: runs on the connection ``init_db`` hands over (SQLite or PostgreSQL)."""

from alembic import context
from sqlmodel import SQLModel

from appliance.storage import models  # noqa: F401  (registers the tables)
from appliance.storage.partitions import partition_tables

connection = context.config.attributes["connection"]
partitions = partition_tables(connection)  # the models know their parent only
context.configure(
    connection=connection,
    target_metadata=SQLModel.metadata,
    render_as_batch=True,
    compare_type=True,
    include_name=lambda name, kind, _: not (kind == "table" and name in partitions),
)
with context.begin_transaction():
    context.run_migrations()
