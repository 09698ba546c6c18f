-- Usage events in blocks (sqlite/event_blocks.rs): one row holds up to 4,096 events,
-- packed, all within 500 ms of event time. One row per event cost ~2.6 µs of CPU to insert
-- on the node that also serves verify; a block costs that once for thousands of events.
-- `first_at` and `last_at` are the block's first and last event times (µs since the
-- epoch); reads of a time range find their blocks through `first_at`.
--
-- AUTOINCREMENT: a block id is never reused, even after retention empties the table, so
-- the rollup watermark below only ever moves forward.
CREATE TABLE usage_event_blocks (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    first_at INTEGER NOT NULL,
    last_at  INTEGER NOT NULL,
    count    INTEGER NOT NULL,
    events   BLOB    NOT NULL
);
CREATE INDEX usage_event_blocks_first_at ON usage_event_blocks (first_at);

-- Every block with an id up to `through_block` is counted in usage_rollups and
-- usage_key_scopes (the meaning `through_rowid` had for rows of usage_events). Rows of
-- usage_events left by earlier versions are moved into blocks, counted, when the store
-- opens (`SqliteStore::convert_event_rows`); the table stays, empty, for that.
ALTER TABLE usage_rollup_watermark ADD COLUMN through_block INTEGER NOT NULL DEFAULT 0;
