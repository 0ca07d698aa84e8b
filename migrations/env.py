"""Alembic environment: tagger passes its engine in `config.attributes["engine"]`.

Run from a source checkout with `alembic -c alembic.ini ...`; the URL then comes from
TAGGER_DB / the tagger settings, exactly as for the `tagger` command.
"""

from alembic import context

from tagger.store.schema import Base

config = context.config
engine = config.attributes.get("engine")
if engine is None:
    from tagger.config import load_settings
    from tagger.store.database import make_engine

    engine = make_engine(load_settings().db_url)

with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=True,  # SQLite cannot ALTER most things; batch mode recreates tables
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
