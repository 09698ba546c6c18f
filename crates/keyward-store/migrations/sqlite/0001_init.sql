-- Keyward embedded store, initial schema.
--
-- Conventions:
--   * ids are UUIDv7 as lowercase hyphenated TEXT, so text order is id (creation) order
--     and cursor pagination is `WHERE id > ? ORDER BY id LIMIT ?`;
--   * times are INTEGER microseconds since the Unix epoch, UTC;
--   * JSON values are TEXT holding valid JSON;
--   * booleans are INTEGER 0/1.
-- STRICT tables make SQLite enforce the declared column types.

CREATE TABLE identities (
    id          TEXT    NOT NULL PRIMARY KEY,
    name        TEXT    NOT NULL,
    owner       TEXT    NOT NULL,
    description TEXT    NOT NULL DEFAULT '',
    meta        TEXT    NOT NULL DEFAULT '{}' CHECK (json_valid(meta) AND json_type(meta) = 'object'),
    enabled     INTEGER NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    deleted_at  INTEGER
) STRICT;

-- A name belongs to at most one live identity; deleting an identity frees its name.
CREATE UNIQUE INDEX identities_live_name ON identities (name) WHERE deleted_at IS NULL;

CREATE TABLE keys (
    id           TEXT    NOT NULL PRIMARY KEY,
    identity_id  TEXT    NOT NULL REFERENCES identities (id),
    name         TEXT    NOT NULL DEFAULT '',
    prefix       TEXT    NOT NULL,
    start        TEXT    NOT NULL,
    -- SHA-256 of the key; the key itself is never stored.
    digest       BLOB    NOT NULL UNIQUE CHECK (length(digest) = 32),
    scopes       TEXT    NOT NULL DEFAULT '[]' CHECK (json_valid(scopes) AND json_type(scopes) = 'array'),
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    expires_at   INTEGER,
    revoked_at   INTEGER,
    enabled      INTEGER NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),
    ip_allowlist TEXT    NOT NULL DEFAULT '[]' CHECK (json_valid(ip_allowlist) AND json_type(ip_allowlist) = 'array'),
    rate_limits  TEXT    NOT NULL DEFAULT '[]' CHECK (json_valid(rate_limits) AND json_type(rate_limits) = 'array'),
    -- Verifications left; NULL is unlimited.
    remaining    INTEGER CHECK (remaining IS NULL OR remaining >= 0),
    last_used_at INTEGER,
    meta         TEXT    NOT NULL DEFAULT '{}' CHECK (json_valid(meta) AND json_type(meta) = 'object'),
    rotated_from TEXT    REFERENCES keys (id),
    rotated_to   TEXT    REFERENCES keys (id)
) STRICT;

-- Listing the keys of one identity, in id order.
CREATE INDEX keys_identity_id ON keys (identity_id, id);

CREATE TABLE audit_log (
    seq        INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    at         INTEGER NOT NULL,
    actor      TEXT    NOT NULL,
    action     TEXT    NOT NULL,
    target     TEXT    NOT NULL,
    request_id TEXT,
    source_ip  TEXT,
    detail     TEXT    NOT NULL DEFAULT 'null' CHECK (json_valid(detail))
) STRICT;

-- Store-wide markers, e.g. `bootstrapped` once the root key exists.
CREATE TABLE settings (
    key   TEXT NOT NULL PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;
