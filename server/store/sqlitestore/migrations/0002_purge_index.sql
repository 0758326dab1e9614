-- Retention: find webhook bodies not yet purged, oldest first. A purged
-- body is empty.
CREATE INDEX webhooks_unpurged ON webhooks (received_at) WHERE length(body) > 0;

-- Retention: the events of a purged webhook.
CREATE INDEX events_by_webhook ON events (webhook_id);
