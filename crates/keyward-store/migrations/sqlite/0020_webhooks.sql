-- Webhooks (issue 5): subscriptions, their deliveries, and the expiring-key notices.

CREATE TABLE webhooks (
    id         TEXT    NOT NULL PRIMARY KEY,
    url        TEXT    NOT NULL,
    events     TEXT    NOT NULL CHECK (json_valid(events) AND json_type(events) = 'array'),
    -- The HMAC signing secret, AS GIVEN: it must be recoverable to sign deliveries, so
    -- it cannot be a digest. To be encrypted under the vault's master key once envelope
    -- encryption exists. Never returned after creation, logged or audit-logged.
    secret     TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    -- The audit seq of the webhook's creation: it gets the events recorded after it.
    after_seq  INTEGER NOT NULL
) STRICT;

-- One event for one webhook. The body is fixed when the event is queued, so every
-- attempt sends the same bytes and event id.
CREATE TABLE webhook_deliveries (
    id               TEXT    NOT NULL PRIMARY KEY,
    webhook_id       TEXT    NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    audit_seq        INTEGER NOT NULL,
    event_id         TEXT    NOT NULL,
    event_type       TEXT    NOT NULL,
    body             TEXT    NOT NULL,
    created_at       INTEGER NOT NULL,
    state            TEXT    NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  INTEGER,
    last_attempt_at  INTEGER,
    last_status      INTEGER,
    last_error       TEXT,
    last_duration_ms INTEGER,
    -- An audit record reaches a webhook at most once, even if two fan-outs overlap.
    UNIQUE (webhook_id, audit_seq)
) STRICT;

-- The delivery worker: the next due delivery of a webhook.
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (webhook_id, next_attempt_at)
    WHERE state = 'pending';

-- One `key.expiring` record per key and expiry time.
CREATE TABLE key_expiry_notices (
    key_id      TEXT    NOT NULL REFERENCES keys (id),
    expires_at  INTEGER NOT NULL,
    notified_at INTEGER NOT NULL,
    PRIMARY KEY (key_id, expires_at)
) STRICT;
