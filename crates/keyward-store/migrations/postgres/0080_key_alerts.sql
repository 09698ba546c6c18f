-- Alerts written from usage (key.rate_limited, key.usage_exceeded): the start of the
-- current alert window of each (key, kind), so every node and every restart agrees that
-- one alert per window was written.
CREATE TABLE key_alerts (
    key_id       uuid        NOT NULL,
    kind         text        NOT NULL,
    window_start timestamptz NOT NULL,
    PRIMARY KEY (key_id, kind)
);
