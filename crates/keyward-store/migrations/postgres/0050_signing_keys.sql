-- Ed25519 key pairs that sign short-lived tokens (JWTs), shared by every node.
-- private_key is PKCS#8 DER and NOT encrypted at rest yet (no master key facility).
CREATE TABLE signing_keys (
    kid         text        NOT NULL PRIMARY KEY,
    public_key  bytea       NOT NULL CHECK (length(public_key) = 32),
    private_key bytea       NOT NULL,
    created_at  timestamptz NOT NULL,
    retired_at  timestamptz
);

CREATE INDEX signing_keys_created ON signing_keys (created_at);
