-- Ed25519 key pairs that sign short-lived tokens (JWTs), shared by every node.
-- private_key is PKCS#8 DER and NOT encrypted at rest yet (no master key facility).
CREATE TABLE signing_keys (
    kid         TEXT    NOT NULL PRIMARY KEY,
    public_key  BLOB    NOT NULL,
    private_key BLOB    NOT NULL,
    created_at  INTEGER NOT NULL,
    retired_at  INTEGER
);

CREATE INDEX signing_keys_created ON signing_keys (created_at);
