-- Two more secrets Keyward must recover, sealed under the vault's master key like the
-- webhook secrets of 0060 (keyward-core `envelope.rs`): a token signing key's private
-- key (PKCS#8 DER, path `keyward/signing-key/<kid>`) and an administrator's TOTP
-- secret (base32, path `keyward/admin-totp/<admin id>`). `*_ciphertext` is the
-- secret sealed under a data key, `*_wrapped_key` that data key sealed under the
-- master key `*_master_key_id`. Once sealed, the plaintext column is cleared (an
-- empty blob for private_key, '' for totp_secret): rows written before this migration
-- are sealed, and their plaintext cleared, when a server with a master key starts.

ALTER TABLE signing_keys ADD COLUMN private_key_ciphertext BLOB;
ALTER TABLE signing_keys ADD COLUMN private_key_wrapped_key BLOB;
ALTER TABLE signing_keys ADD COLUMN private_key_master_key_id TEXT;

ALTER TABLE admins ADD COLUMN totp_secret_ciphertext BLOB;
ALTER TABLE admins ADD COLUMN totp_secret_wrapped_key BLOB;
ALTER TABLE admins ADD COLUMN totp_secret_master_key_id TEXT;

-- The master key rewrap job finds rows not yet under the current key.
CREATE INDEX signing_keys_private_key_master_key ON signing_keys (private_key_master_key_id);
CREATE INDEX admins_totp_secret_master_key ON admins (totp_secret_master_key_id);
