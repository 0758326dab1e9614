-- Retention: find webhook bodies not yet purged, oldest first (a purged
-- body is empty). Without it every purge, on every replica and interval,
-- scanned and sorted every webhook ever stored.
CREATE INDEX webhooks_unpurged ON webhooks (received_at) WHERE length(body) > 0;
