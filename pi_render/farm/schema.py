"""The farm database's schema, as numbered migrations: each runs once, in order, at a daemon's
start (`farm/db.py: migrate`). Append new ones; never edit one that has shipped."""

MIGRATIONS: list[tuple[str, ...]] = [
    (  # 1: records, queue, frame ledger, hosts, once-per-farm slots
        """CREATE TABLE tasks (
            id text PRIMARY KEY,
            version integer NOT NULL,
            status text NOT NULL,
            type text NOT NULL,
            attempts integer NOT NULL,
            parent text,
            job text,
            origin text,
            content_key text,
            uid integer,
            kept_bytes bigint NOT NULL,
            finished_at timestamptz,
            body text NOT NULL)""",
        "CREATE INDEX tasks_status ON tasks (status, id)",
        "CREATE INDEX tasks_type ON tasks (type, id)",
        "CREATE INDEX tasks_parent ON tasks (parent) WHERE parent IS NOT NULL",
        "CREATE INDEX tasks_job ON tasks (job) WHERE job IS NOT NULL",
        # a cron fire or a watched file makes one task, whichever host gets there first
        "CREATE UNIQUE INDEX tasks_origin ON tasks (origin) WHERE origin IS NOT NULL",
        "CREATE INDEX tasks_content_key ON tasks (content_key) WHERE content_key IS NOT NULL",
        "CREATE INDEX tasks_uid ON tasks (uid)",
        """CREATE TABLE queue_items (
            task_id text PRIMARY KEY,
            label text NOT NULL,
            lane smallint NOT NULL,
            seq bigserial NOT NULL,
            not_before timestamptz,
            lease_until timestamptz,
            holder text,
            token bigint,
            claims integer NOT NULL DEFAULT 0,
            again boolean NOT NULL DEFAULT false,
            needs text[] NOT NULL DEFAULT '{}',
            avoid text[] NOT NULL DEFAULT '{}')""",
        "CREATE SEQUENCE queue_tokens",
        "CREATE INDEX queue_items_order ON queue_items (label, lane, seq)",
        """CREATE TABLE frames (
            job text NOT NULL,
            frame integer NOT NULL,
            task_id text NOT NULL,
            attempt integer NOT NULL,
            host text NOT NULL,
            body text NOT NULL,
            PRIMARY KEY (job, frame))""",
        "CREATE INDEX frames_task ON frames (task_id)",
        """CREATE TABLE hosts (
            name text PRIMARY KEY,
            info text NOT NULL,
            started_at timestamptz NOT NULL,
            last_seen timestamptz NOT NULL)""",
        """CREATE TABLE slots (
            name text NOT NULL,
            slot text NOT NULL,
            host text NOT NULL,
            taken_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (name, slot))""",
        """CREATE TABLE blocklist (
            job text NOT NULL,
            host text NOT NULL,
            reason text NOT NULL,
            at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (job, host))""",
    ),
    (  # 2: small JSON stores every host shares (workflow runs)
        """CREATE TABLE kv (
            store text NOT NULL,
            key text NOT NULL,
            value text NOT NULL,
            PRIMARY KEY (store, key))""",
    ),
]
