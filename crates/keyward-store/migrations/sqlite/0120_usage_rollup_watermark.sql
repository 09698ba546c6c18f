-- Rollups written behind the events (sqlite/pending_rollups.rs): the embedded store
-- inserts each batch of usage events at once but adds their rollups and scope uses a
-- few seconds later, many batches in one go. This row says how far the rollups go: every
-- usage event with a rowid up to `through_rowid` is counted in usage_rollups and
-- usage_key_scopes; on opening, the store counts the events beyond it (those whose
-- rollups a crash lost). 0 when there are no events. Everything stored before this
-- migration was rolled up as it was written.
--
-- Only the process holding the lock file next to the database keeps counts pending, and
-- only it counts events beyond the watermark on opening: the lock dies with a crashed
-- process, so a restart counts what it lost, and another process opening the same
-- folder (`keyward audit verify` beside the server) never counts the server's pending
-- events a second time.
CREATE TABLE usage_rollup_watermark (
    id            INTEGER PRIMARY KEY CHECK (id = 1),
    through_rowid INTEGER NOT NULL
);
INSERT INTO usage_rollup_watermark (id, through_rowid)
    SELECT 1, coalesce(max(rowid), 0) FROM usage_events;
