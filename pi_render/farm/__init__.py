"""Farm mode: several daemons, one PostgreSQL database, one shared folder. Only this package and
the PostgreSQL backends (`queue/postgres.py`, `manifest/postgres.py`) import psycopg; a daemon
without `[farm]` never imports any of it."""
