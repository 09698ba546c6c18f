-- The secrets vault (issue 7): sealed secret versions and key rotation policies.
-- Values are never stored in the clear: `ciphertext` is the value sealed under a data
-- key, `wrapped_key` that data key sealed under the master key `master_key_id`
-- (keyward-core `envelope.rs`).

CREATE TABLE secret_versions (
    path          text        NOT NULL,
    version       bigint      NOT NULL CHECK (version >= 1),
    ciphertext    bytea       NOT NULL,
    wrapped_key   bytea       NOT NULL,
    master_key_id text        NOT NULL,
    meta          json        NOT NULL DEFAULT '{}',
    created_at    timestamptz NOT NULL,
    PRIMARY KEY (path, version)
);

-- The master key rewrap job finds rows not yet under the current key.
CREATE INDEX secret_versions_master_key ON secret_versions (master_key_id);

CREATE TABLE rotation_policies (
    key_id          uuid        NOT NULL PRIMARY KEY REFERENCES keys (id),
    max_age_seconds bigint      NOT NULL,
    grace_seconds   bigint      NOT NULL,
    deliver_to      text,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL
);
