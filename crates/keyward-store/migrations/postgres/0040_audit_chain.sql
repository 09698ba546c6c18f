-- The tamper-evident audit log (keyward_core::audit_chain): each record carries the
-- SHA-256 chain hash of itself and the record before it, computed by the store in the
-- transaction that appends it (under the audit advisory lock, so in seq order).
ALTER TABLE audit_log ADD COLUMN hash bytea CHECK (hash IS NULL OR length(hash) = 32);

-- Signed checkpoints of the chain's head, made by a key kept outside the database.
CREATE TABLE audit_checkpoints (
    id        bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    seq       bigint      NOT NULL,
    hash      bytea       NOT NULL CHECK (length(hash) = 32),
    signature bytea       NOT NULL,
    key_id    text        NOT NULL,
    at        timestamptz NOT NULL
);
CREATE INDEX audit_checkpoints_seq ON audit_checkpoints (seq);

-- Records written before this migration have no hash yet: the store chains them once,
-- at its next open, and removes this marker in the same transaction. From then on a
-- record without a hash is a tampered one.
INSERT INTO settings (key, value) VALUES ('audit_chain_backfill', 'pending');
