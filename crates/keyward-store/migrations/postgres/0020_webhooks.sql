-- Webhooks (issue 5): subscriptions, their deliveries, and the expiring-key notices.

CREATE TABLE webhooks (
    id         uuid        NOT NULL PRIMARY KEY,
    url        text        NOT NULL,
    events     jsonb       NOT NULL CHECK (jsonb_typeof(events) = 'array'),
    -- The HMAC signing secret, AS GIVEN: it must be recoverable to sign deliveries, so
    -- it cannot be a digest. To be encrypted under the vault's master key once envelope
    -- encryption exists. Never returned after creation, logged or audit-logged.
    secret     text        NOT NULL,
    created_at timestamptz NOT NULL,
    -- The audit seq of the webhook's creation: it gets the events recorded after it.
    after_seq  bigint      NOT NULL
);

-- One event for one webhook. The body is fixed when the event is queued, so every
-- attempt sends the same bytes and event id.
CREATE TABLE webhook_deliveries (
    id               uuid        NOT NULL PRIMARY KEY,
    webhook_id       uuid        NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    audit_seq        bigint      NOT NULL,
    event_id         uuid        NOT NULL,
    event_type       text        NOT NULL,
    body             text        NOT NULL,
    created_at       timestamptz NOT NULL,
    state            text        NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts         integer     NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz,
    last_attempt_at  timestamptz,
    last_status      integer,
    last_error       text,
    last_duration_ms bigint,
    -- An audit record reaches a webhook at most once, even if two fan-outs overlap.
    UNIQUE (webhook_id, audit_seq)
);

-- The delivery worker: the next due delivery of a webhook.
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (webhook_id, next_attempt_at)
    WHERE state = 'pending';

-- One `key.expiring` record per key and expiry time.
CREATE TABLE key_expiry_notices (
    key_id      uuid        NOT NULL REFERENCES keys (id),
    expires_at  timestamptz NOT NULL,
    notified_at timestamptz NOT NULL,
    PRIMARY KEY (key_id, expires_at)
);
