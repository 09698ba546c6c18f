-- Usage events (issue 5): one row per verification, written in batches by each node's
-- usage writer; rollups per key, outcome and minute/hour/day; and the last time each
-- granted scope of a key was exercised (least-privilege advice). No foreign keys: keys
-- are never deleted, and ingestion must stay cheap.

CREATE TABLE usage_events (
    at          timestamptz NOT NULL,
    key_id      uuid,
    identity_id uuid,
    -- The contract's verify code, e.g. 'VALID'.
    code        text        NOT NULL,
    ip          text,
    -- Space-separated (scopes never contain spaces): exercised (accepted) or requested.
    scopes      text        NOT NULL DEFAULT '',
    latency_us  integer     NOT NULL DEFAULT 0,
    -- The verifier's tags, or NULL.
    tags        jsonb
);
CREATE INDEX usage_events_at ON usage_events (at);
CREATE INDEX usage_events_key_at ON usage_events (key_id, at) WHERE key_id IS NOT NULL;

CREATE TABLE usage_rollups (
    -- 'minute', 'hour' or 'day'.
    granularity text        NOT NULL,
    start       timestamptz NOT NULL,
    key_id      uuid        NOT NULL,
    identity_id uuid        NOT NULL,
    code        text        NOT NULL,
    count       bigint      NOT NULL,
    PRIMARY KEY (granularity, key_id, start, code)
);
CREATE INDEX usage_rollups_identity ON usage_rollups (granularity, identity_id, start);
CREATE INDEX usage_rollups_start ON usage_rollups (granularity, start);

CREATE TABLE usage_key_scopes (
    key_id       uuid        NOT NULL,
    scope        text        NOT NULL,
    last_used_at timestamptz NOT NULL,
    PRIMARY KEY (key_id, scope)
);
