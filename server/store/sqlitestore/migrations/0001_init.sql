-- Webhook bodies, verbatim. A body is stored only when at least one of its
-- events was new. received_at is Unix milliseconds.
CREATE TABLE webhooks (
    id          INTEGER PRIMARY KEY,
    received_at INTEGER NOT NULL,
    body        BLOB    NOT NULL
) STRICT;

-- Normalized events, one row per (request_id, event_id); request_id is ''
-- for events that name no request. data is the proto.Marshal of the event
-- without raw_body (the body is in webhooks). Webhooks are never deleted,
-- so events(webhook_id) needs no index.
CREATE TABLE events (
    request_id    TEXT    NOT NULL,
    event_id      TEXT    NOT NULL,
    webhook_id    INTEGER NOT NULL REFERENCES webhooks (id),
    event_time_ms INTEGER NOT NULL,
    data          BLOB    NOT NULL,
    PRIMARY KEY (request_id, event_id)
) STRICT;

-- ListEvents order and paging.
CREATE INDEX events_by_time ON events (request_id, event_time_ms, event_id);

-- The snapshot of every request with at least one event: data is the
-- proto.Marshal of the AuthRequest, revision and updated_at (Unix
-- milliseconds) repeat its fields for queries.
CREATE TABLE requests (
    request_id TEXT    PRIMARY KEY,
    revision   INTEGER NOT NULL,
    data       BLOB    NOT NULL,
    updated_at INTEGER NOT NULL
) STRICT;
