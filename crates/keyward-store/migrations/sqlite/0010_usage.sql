-- Usage events (issue 5): one row per verification, written in batches by the server's
-- usage writer; rollups per key, outcome and minute/hour/day; and the last time each
-- granted scope of a key was exercised (least-privilege advice). Times are INTEGER
-- microseconds since the epoch, uuids TEXT, as in 0001_init.sql. No foreign keys: keys
-- are never deleted, and ingestion must stay cheap.

CREATE TABLE usage_events (
    at          INTEGER NOT NULL,
    key_id      TEXT,
    identity_id TEXT,
    -- The contract's verify code, e.g. 'VALID'.
    code        TEXT    NOT NULL,
    ip          TEXT,
    -- Space-separated (scopes never contain spaces): exercised (accepted) or requested.
    scopes      TEXT    NOT NULL DEFAULT '',
    latency_us  INTEGER NOT NULL DEFAULT 0,
    -- JSON object of the verifier's tags, or NULL.
    tags        TEXT
);
-- Retention and time-range scans (top sources filter this range by key or identity).
-- Deliberately the only index: a second one, on (key_id, at), halved the ingestion rate.
CREATE INDEX usage_events_at ON usage_events (at);

CREATE TABLE usage_rollups (
    -- 'minute', 'hour' or 'day'.
    granularity TEXT    NOT NULL,
    start       INTEGER NOT NULL,
    key_id      TEXT    NOT NULL,
    identity_id TEXT    NOT NULL,
    code        TEXT    NOT NULL,
    count       INTEGER NOT NULL,
    PRIMARY KEY (granularity, key_id, start, code)
) WITHOUT ROWID;
-- Usage of one identity.
CREATE INDEX usage_rollups_identity ON usage_rollups (granularity, identity_id, start);
-- Retention and top keys.
CREATE INDEX usage_rollups_start ON usage_rollups (granularity, start);

CREATE TABLE usage_key_scopes (
    key_id       TEXT    NOT NULL,
    scope        TEXT    NOT NULL,
    last_used_at INTEGER NOT NULL,
    PRIMARY KEY (key_id, scope)
) WITHOUT ROWID;
