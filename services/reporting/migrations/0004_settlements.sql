-- Settlements (精算) of each facility's day as payments reconciled them (調定): the processor's
-- fee (繰替払い) and whether the day matched the ledger. The newest word on a batch wins.
CREATE TABLE settlements (
    batch_id      text PRIMARY KEY,
    facility_code text NOT NULL,
    business_date date NOT NULL,
    reconciled    boolean NOT NULL,
    gross_yen     bigint,           -- null for a mismatch (the batch's figures are disputed)
    fee_yen       bigint,
    net_yen       bigint,
    as_of         timestamptz NOT NULL
);
CREATE INDEX settlements_day ON settlements (facility_code, business_date);
