-- Keyward cluster store (PostgreSQL), initial schema. Same records as the embedded
-- store (migrations/sqlite), in PostgreSQL's native types:
--   * ids are UUIDv7 (`uuid`); uuid order is byte order, which for UUIDv7 is creation
--     order, so cursor pagination is `WHERE id > $1 ORDER BY id LIMIT $2`;
--   * times are `timestamptz` (microsecond precision, as Keyward keeps them);
--   * user-supplied JSON objects (meta, audit detail) are `json`, which keeps the text
--     as given (key order included); lists Keyward itself writes are `jsonb`.

CREATE TABLE identities (
    id          uuid        NOT NULL PRIMARY KEY,
    name        text        NOT NULL,
    owner       text        NOT NULL,
    description text        NOT NULL DEFAULT '',
    meta        json        NOT NULL DEFAULT '{}' CHECK (json_typeof(meta) = 'object'),
    enabled     boolean     NOT NULL DEFAULT true,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL,
    deleted_at  timestamptz
);

-- A name belongs to at most one live identity; deleting an identity frees its name.
CREATE UNIQUE INDEX identities_live_name ON identities (name) WHERE deleted_at IS NULL;

CREATE TABLE keys (
    id           uuid        NOT NULL PRIMARY KEY,
    identity_id  uuid        NOT NULL REFERENCES identities (id),
    name         text        NOT NULL DEFAULT '',
    prefix       text        NOT NULL,
    start        text        NOT NULL,
    -- SHA-256 of the key; the key itself is never stored.
    digest       bytea       NOT NULL UNIQUE CHECK (length(digest) = 32),
    scopes       jsonb       NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(scopes) = 'array'),
    created_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL,
    expires_at   timestamptz,
    revoked_at   timestamptz,
    enabled      boolean     NOT NULL DEFAULT true,
    ip_allowlist jsonb       NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(ip_allowlist) = 'array'),
    rate_limits  jsonb       NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(rate_limits) = 'array'),
    -- Verifications left; NULL is unlimited. Taken with one atomic
    -- `UPDATE ... WHERE remaining > 0`, so it never goes below 0 on any node.
    remaining    bigint      CHECK (remaining IS NULL OR remaining >= 0),
    last_used_at timestamptz,
    meta         json        NOT NULL DEFAULT '{}' CHECK (json_typeof(meta) = 'object'),
    rotated_from uuid        REFERENCES keys (id),
    rotated_to   uuid        REFERENCES keys (id)
);

-- Listing the keys of one identity, in id order.
CREATE INDEX keys_identity_id ON keys (identity_id, id);
-- The expiry sweep: keys that expire and are not revoked yet.
CREATE INDEX keys_expires_at ON keys (expires_at) WHERE expires_at IS NOT NULL;

-- One audit sequence for the whole cluster. Every transaction that inserts here first
-- takes a transaction-scoped advisory lock (see postgres.rs, `insert_audit`), so seq
-- values are handed out in commit order: a reader that has seen seq N never later
-- finds a newly committed entry below N.
CREATE TABLE audit_log (
    seq        bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at         timestamptz NOT NULL,
    actor      text        NOT NULL,
    action     text        NOT NULL,
    target     text        NOT NULL,
    request_id text,
    source_ip  text,
    detail     json        NOT NULL DEFAULT 'null'
);

-- Store-wide markers, e.g. `bootstrapped` once the root key exists.
CREATE TABLE settings (
    key   text NOT NULL PRIMARY KEY,
    value text NOT NULL
);
