-- Secrets Keyward must recover, sealed under the vault's master key (keyward-core
-- `envelope.rs`, as in `secret_versions`): `*_ciphertext` is the secret sealed under a
-- data key, `*_wrapped_key` that data key sealed under the master key `*_master_key_id`.
-- Once sealed, the plaintext column is cleared (''): rows written before this migration
-- are sealed, and their plaintext cleared, when a server with a master key starts.

ALTER TABLE webhooks ADD COLUMN secret_ciphertext BLOB;
ALTER TABLE webhooks ADD COLUMN secret_wrapped_key BLOB;
ALTER TABLE webhooks ADD COLUMN secret_master_key_id TEXT;

-- The master key rewrap job finds rows not yet under the current key.
CREATE INDEX webhooks_secret_master_key ON webhooks (secret_master_key_id);
