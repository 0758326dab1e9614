-- A request's events move into its row (see entries.go for the format):
-- every commit rewrites that row anyway, while each event in its own
-- events row cost a write at a random page of the primary key, about half
-- the cost of a commit. events keeps the events that name no request.
-- The events already stored are moved by Open, in Go, since SQL cannot
-- write the format.
ALTER TABLE requests ADD COLUMN events BLOB NOT NULL DEFAULT X'';

-- Retention: the requests whose events a webhook brought, as a JSON array,
-- to strip the personal data of its events from their rows.
ALTER TABLE webhooks ADD COLUMN request_ids TEXT NOT NULL DEFAULT '[]';
UPDATE webhooks SET request_ids = (
    SELECT json_group_array(DISTINCT request_id) FROM events
    WHERE webhook_id = webhooks.id AND request_id != ''
) WHERE length(body) > 0;
