-- The expiry sweep (a background job) reads keys in (expires_at, id) order from its
-- progress mark on: an index, so it never scans the table under the write lock.
CREATE INDEX keys_expires_at ON keys (expires_at, id) WHERE expires_at IS NOT NULL;
