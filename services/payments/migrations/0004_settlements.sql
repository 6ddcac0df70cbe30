-- Daily settlement batches (調定) per facility and day, compared with the ledger.
CREATE TABLE settlements (
    batch_id      text PRIMARY KEY,
    facility_code text NOT NULL REFERENCES facilities (code),
    business_date date NOT NULL,
    processor     text NOT NULL,
    status        text NOT NULL CHECK (status IN ('reconciled', 'mismatch')),
    reported_yen  bigint NOT NULL CHECK (reported_yen >= 0),
    fee_yen       bigint NOT NULL CHECK (fee_yen >= 0),
    differences   jsonb NOT NULL DEFAULT '[]',
    posting_id    uuid REFERENCES postings (posting_id),
    received_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX settlements_by_facility_day ON settlements (facility_code, business_date);

CREATE TABLE settlement_lines (
    batch_id   text NOT NULL REFERENCES settlements (batch_id),
    method     text NOT NULL,
    brand      text,
    count      integer NOT NULL CHECK (count >= 0),
    amount_yen bigint NOT NULL CHECK (amount_yen >= 0),
    fee_yen    bigint NOT NULL CHECK (fee_yen >= 0)
);
CREATE INDEX settlement_lines_by_batch ON settlement_lines (batch_id);
