-- The tamper-evident audit log (keyward_core::audit_chain): each record carries the
-- SHA-256 chain hash of itself and the record before it, computed by the store in the
-- transaction that appends it.
ALTER TABLE audit_log ADD COLUMN hash BLOB CHECK (hash IS NULL OR length(hash) = 32);

-- Signed checkpoints of the chain's head, made by a key kept outside the database.
CREATE TABLE audit_checkpoints (
    id        INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    seq       INTEGER NOT NULL,
    hash      BLOB    NOT NULL CHECK (length(hash) = 32),
    signature BLOB    NOT NULL,
    key_id    TEXT    NOT NULL,
    at        INTEGER NOT NULL
) STRICT;
CREATE INDEX audit_checkpoints_seq ON audit_checkpoints (seq);

-- Records written before this migration have no hash yet: the store chains them once,
-- at its next open, and removes this marker in the same transaction. From then on a
-- record without a hash is a tampered one.
INSERT INTO settings (key, value) VALUES ('audit_chain_backfill', 'pending');
