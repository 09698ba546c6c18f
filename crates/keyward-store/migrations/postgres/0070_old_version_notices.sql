-- Rotation status (issue 7, item 5): the old keys whose `key.old_version_in_use` notice
-- was written, so the jobs leader writes it once per old key across restarts and nodes.
-- The row and the audit entry are written in one transaction.
CREATE TABLE old_version_notices (
    key_id      uuid        PRIMARY KEY,
    noticed_at  timestamptz NOT NULL
);

-- The job reads keys in their grace (rotated, revocation ahead) by revocation time.
CREATE INDEX keys_grace ON keys (revoked_at) WHERE rotated_to IS NOT NULL;
