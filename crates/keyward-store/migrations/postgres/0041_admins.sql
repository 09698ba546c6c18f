-- Human administrators (issue 9). Each has an identity of its own: its sessions are
-- short-lived keys of that identity, so the ordinary bearer authentication accepts
-- them and disabling the identity ends them.
CREATE TABLE admins (
    id             uuid        NOT NULL PRIMARY KEY,
    username       text        NOT NULL UNIQUE,
    identity_id    uuid        NOT NULL REFERENCES identities (id),
    -- argon2id PHC string; the password itself is never stored.
    password_hash  text        NOT NULL,
    -- Base32 TOTP secret (needed to check codes, so it cannot be hashed).
    totp_secret    text        NOT NULL,
    scopes         jsonb       NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(scopes) = 'array'),
    enabled        boolean     NOT NULL DEFAULT true,
    created_at     timestamptz NOT NULL,
    -- The last TOTP time step accepted: a code of this step or earlier is a replay.
    last_totp_step bigint
);

-- One-time recovery codes: SHA-256 of each, used at most once.
CREATE TABLE admin_recovery_codes (
    admin_id  uuid        NOT NULL REFERENCES admins (id),
    code_hash text        NOT NULL,
    used_at   timestamptz,
    PRIMARY KEY (admin_id, code_hash)
);
