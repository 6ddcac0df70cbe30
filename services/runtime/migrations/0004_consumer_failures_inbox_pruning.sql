-- Issue 21: outages end without dead letters; the inbox is pruned.

-- Handler failures per message (services/runtime/consumer.py): the poison bound
-- (CONSUMER_MAX_DELIVER) counts these, not JetStream's num_delivered, which also grows with
-- crashes and outages. Written in a transaction of its own when an event fails alone; keyed by
-- the stream message (a re-driven dead letter is a new message: a new count) and its event id
-- (a stream created again reuses sequences). Rows are pruned with the inbox.
CREATE TABLE consumer_failures (
    consumer    text NOT NULL,
    stream_seq  bigint NOT NULL,
    event_id    text NOT NULL,
    failures    integer NOT NULL,
    last_error  text NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, stream_seq, event_id)
);
CREATE INDEX consumer_failures_updated_at ON consumer_failures (updated_at);

-- The inbox pruning job (services/runtime/inbox.py) deletes rows older than
-- INBOX_RETENTION_DAYS: an index on the time it looks them up by. processed_at only grows,
-- so new entries go to the index's right edge.
CREATE INDEX inbox_processed_at ON inbox (processed_at);
