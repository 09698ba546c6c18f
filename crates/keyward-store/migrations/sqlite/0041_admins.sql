-- Human administrators (issue 9). Each has an identity of its own: its sessions are
-- short-lived keys of that identity, so the ordinary bearer authentication accepts
-- them and disabling the identity ends them.
CREATE TABLE admins (
    id             TEXT    NOT NULL PRIMARY KEY,
    username       TEXT    NOT NULL UNIQUE,
    identity_id    TEXT    NOT NULL REFERENCES identities (id),
    -- argon2id PHC string; the password itself is never stored.
    password_hash  TEXT    NOT NULL,
    -- Base32 TOTP secret (needed to check codes, so it cannot be hashed).
    totp_secret    TEXT    NOT NULL,
    scopes         TEXT    NOT NULL DEFAULT '[]' CHECK (json_valid(scopes) AND json_type(scopes) = 'array'),
    enabled        INTEGER NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),
    created_at     INTEGER NOT NULL,
    -- The last TOTP time step accepted: a code of this step or earlier is a replay.
    last_totp_step INTEGER
) STRICT;

-- One-time recovery codes: SHA-256 of each, used at most once.
CREATE TABLE admin_recovery_codes (
    admin_id  TEXT    NOT NULL REFERENCES admins (id),
    code_hash TEXT    NOT NULL,
    used_at   INTEGER,
    PRIMARY KEY (admin_id, code_hash)
) STRICT;
