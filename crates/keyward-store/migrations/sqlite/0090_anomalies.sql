-- Anomalies (issue 6): what the detectors raised from the usage events, the detectors'
-- cursor over those events, and each identity's automatic-response policy. Times are
-- INTEGER microseconds since the epoch, uuids TEXT, as in 0001_init.sql.

CREATE TABLE anomalies (
    id           TEXT    PRIMARY KEY,
    at           INTEGER NOT NULL,
    key_id       TEXT,
    identity_id  TEXT,
    kind         TEXT    NOT NULL,
    severity     TEXT    NOT NULL,
    detail       TEXT    NOT NULL,
    -- JSON: the structured evidence (addresses, counts, baseline against observed).
    evidence     TEXT    NOT NULL DEFAULT 'null',
    -- What it is about, for grouping an episode: key id, identity id or address.
    subject      TEXT    NOT NULL,
    -- NULL while the response (notify / disable the key) has not run yet.
    action_taken TEXT
);
CREATE INDEX anomalies_at ON anomalies (at, id);
CREATE INDEX anomalies_key ON anomalies (key_id, at) WHERE key_id IS NOT NULL;
CREATE INDEX anomalies_identity ON anomalies (identity_id, at) WHERE identity_id IS NOT NULL;
CREATE INDEX anomalies_subject ON anomalies (subject, kind, at);
CREATE INDEX anomalies_pending ON anomalies (at) WHERE action_taken IS NULL;

-- One row: the time up to which the usage events have been fed to the detectors.
CREATE TABLE anomaly_cursor (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    at INTEGER NOT NULL
);

CREATE TABLE anomaly_policies (
    identity_id  TEXT    PRIMARY KEY,
    -- 'notify' or 'disable_key'.
    action       TEXT    NOT NULL,
    -- 'low', 'medium' or 'high'.
    min_severity TEXT    NOT NULL,
    updated_at   INTEGER NOT NULL
);
