-- Rotation status (issue 7, item 5): the old keys whose `key.old_version_in_use` notice
-- was written, so the jobs leader writes it once per old key across restarts and nodes.
-- The row and the audit entry are written in one transaction. Times are INTEGER
-- microseconds, uuids TEXT, as in 0001_init.sql.
CREATE TABLE old_version_notices (
    key_id      TEXT    PRIMARY KEY,
    noticed_at  INTEGER NOT NULL
) WITHOUT ROWID;

-- The job reads keys in their grace (rotated, revocation ahead) by revocation time.
CREATE INDEX keys_grace ON keys (revoked_at) WHERE rotated_to IS NOT NULL;
