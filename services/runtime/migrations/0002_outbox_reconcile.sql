-- The outbox reconciliation job (services/runtime/reconcile.py).
-- republished: how many times the job found this row's message lost from its stream and
-- queued it again; the relay then publishes it under a new Nats-Msg-Id (JetStream would
-- drop a re-publish with the old id inside its duplicate window), the consumers' inbox still
-- dedupes it by its ce-id.
ALTER TABLE outbox ADD COLUMN republished integer NOT NULL DEFAULT 0;

-- How far (outbox seq) every published row's message has been seen in its stream with its
-- Nats-Msg-Id. Rows past it are checked one by one; rows before it only against the stream's
-- deleted sequences, first sequence and creation time (one request per stream).
CREATE TABLE outbox_reconcile (
    id               boolean PRIMARY KEY DEFAULT true CHECK (id),
    verified_through bigint NOT NULL DEFAULT 0,
    last_run_at      timestamptz
);
INSERT INTO outbox_reconcile DEFAULT VALUES;
