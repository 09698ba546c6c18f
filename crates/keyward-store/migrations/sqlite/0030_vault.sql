-- The secrets vault (issue 7): sealed secret versions and key rotation policies.
-- Values are never stored in the clear: `ciphertext` is the value sealed under a data
-- key, `wrapped_key` that data key sealed under the master key `master_key_id`
-- (keyward-core `envelope.rs`).

CREATE TABLE secret_versions (
    path          TEXT    NOT NULL,
    version       INTEGER NOT NULL CHECK (version >= 1),
    ciphertext    BLOB    NOT NULL,
    wrapped_key   BLOB    NOT NULL,
    master_key_id TEXT    NOT NULL,
    meta          TEXT    NOT NULL DEFAULT '{}',
    created_at    INTEGER NOT NULL,
    PRIMARY KEY (path, version)
) WITHOUT ROWID;

-- The master key rewrap job finds rows not yet under the current key.
CREATE INDEX secret_versions_master_key ON secret_versions (master_key_id);

CREATE TABLE rotation_policies (
    key_id          TEXT    NOT NULL PRIMARY KEY REFERENCES keys (id),
    max_age_seconds INTEGER NOT NULL,
    grace_seconds   INTEGER NOT NULL,
    deliver_to      TEXT,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);
