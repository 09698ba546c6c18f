-- Anomalies (issue 6): what the detectors raised from the usage events, the detectors'
-- cursor over those events (the jobs leader tails every node's events), and each
-- identity's automatic-response policy.

CREATE TABLE anomalies (
    id           uuid        PRIMARY KEY,
    at           timestamptz NOT NULL,
    key_id       uuid,
    identity_id  uuid,
    kind         text        NOT NULL,
    severity     text        NOT NULL,
    detail       text        NOT NULL,
    -- The structured evidence (addresses, counts, baseline against observed).
    evidence     jsonb       NOT NULL DEFAULT 'null',
    -- What it is about, for grouping an episode: key id, identity id or address.
    subject      text        NOT NULL,
    -- NULL while the response (notify / disable the key) has not run yet.
    action_taken text
);
CREATE INDEX anomalies_at ON anomalies (at, id);
CREATE INDEX anomalies_key ON anomalies (key_id, at) WHERE key_id IS NOT NULL;
CREATE INDEX anomalies_identity ON anomalies (identity_id, at) WHERE identity_id IS NOT NULL;
CREATE INDEX anomalies_subject ON anomalies (subject, kind, at);
CREATE INDEX anomalies_pending ON anomalies (at) WHERE action_taken IS NULL;

-- One row: the time up to which the usage events have been fed to the detectors.
CREATE TABLE anomaly_cursor (
    id integer     PRIMARY KEY CHECK (id = 1),
    at timestamptz NOT NULL
);

CREATE TABLE anomaly_policies (
    identity_id  uuid        PRIMARY KEY,
    -- 'notify' or 'disable_key'.
    action       text        NOT NULL,
    -- 'low', 'medium' or 'high'.
    min_severity text        NOT NULL,
    updated_at   timestamptz NOT NULL
);
