-- A terminal transaction id posted before that arrives again with other content (amount,
-- means or time differ; a terminal that reset its counter) is refused, dead-lettered with both
-- versions, and announced to finance once per distinct repeat: this table is that "once"
-- (a redelivered or replayed repeat finds its row and announces nothing new).
CREATE TABLE terminal_conflicts (
    terminal_id    text NOT NULL,
    transaction_id text NOT NULL,
    received_key   text NOT NULL,  -- the refused version, as canonical JSON
    facility_code  text NOT NULL,
    posted         jsonb NOT NULL,
    received       jsonb NOT NULL,
    detected_at    timestamptz NOT NULL,
    PRIMARY KEY (terminal_id, transaction_id, received_key)
);
