-- The runtime's tables, created in every service's own schema (search_path points there).

-- Transactional outbox: written in the same transaction as the state change it announces.
CREATE TABLE outbox (
    seq          bigserial PRIMARY KEY,
    event_id     uuid NOT NULL UNIQUE,
    subject      text NOT NULL,          -- NATS subject, relative to the namespace
    ce_type      text NOT NULL,
    ce_source    text NOT NULL,
    ce_subject   text NOT NULL,
    ce_time      timestamptz NOT NULL,
    trace_headers jsonb NOT NULL DEFAULT '{}'::jsonb,
    payload      text NOT NULL,          -- the JSON body, exactly as published
    created_at   timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz,
    stream_seq   bigint                  -- JetStream sequence from the PubAck
);
CREATE INDEX outbox_unpublished ON outbox (seq) WHERE published_at IS NULL;
CREATE INDEX outbox_published_at ON outbox (published_at) WHERE published_at IS NOT NULL;

-- Idempotent consumer: one row per (consumer, event) processed, written with the effects.
CREATE TABLE inbox (
    consumer     text NOT NULL,
    event_id     text NOT NULL,
    ce_type      text NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);

-- Wake the relay as soon as a transaction that wrote outbox rows commits (NOTIFY is delivered
-- at commit). The relay also polls, so a lost notification only delays, never loses.
CREATE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('cityhall_outbox', TG_TABLE_SCHEMA);
    RETURN NULL;
END;
$$;
CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();
