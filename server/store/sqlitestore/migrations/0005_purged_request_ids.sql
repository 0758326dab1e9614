-- 0004 filled request_ids for the webhooks not yet purged only: one purged
-- before it names no request, though its events are in their requests'
-- rows, and nothing that starts from the webhook (an export) finds them.
-- Open fills those in, in Go, from the requests' rows (fillRequestIDs),
-- and then drops this table of the webhooks still to fill.
CREATE TABLE fill_request_ids (webhook_id INTEGER PRIMARY KEY) STRICT;
INSERT INTO fill_request_ids SELECT id FROM webhooks WHERE request_ids = '[]' AND length(body) = 0;
