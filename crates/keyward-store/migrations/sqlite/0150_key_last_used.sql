-- Last-use times apart from the keys. The usage writer sets the time of every busy key
-- every few seconds; inside the wide `keys` rows (~250 bytes each) that dirtied nearly
-- every page of the table each time, and each page went through the WAL and was then
-- checkpointed: ~0.7 µs of CPU per verification with 20,000 busy keys, on the node that
-- serves them. A row here is ~50 bytes, found by its key in one B-tree.
--
-- No foreign key: the writer records only keys that verified, and keys are never
-- deleted; checking each write against `keys` would cost the B-tree descent this table
-- exists to save. Rows are only ever read joined to their key.
CREATE TABLE key_last_used (
    key_id TEXT    NOT NULL PRIMARY KEY,
    at     INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

INSERT INTO key_last_used (key_id, at)
SELECT id, last_used_at FROM keys WHERE last_used_at IS NOT NULL;

ALTER TABLE keys DROP COLUMN last_used_at;
