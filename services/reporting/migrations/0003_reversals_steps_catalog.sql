-- Refunds (返金) and voids (取消): one row each, applied to their capture's bucket. A reversal
-- that arrives before its capture is kept with applied = false and applied when the capture
-- arrives (events of different services have no order between them).
CREATE TABLE payment_reversals (
    reversal_id text PRIMARY KEY,   -- the refund id, or 'void:<payment id>'
    payment_id  uuid NOT NULL,
    kind        text NOT NULL CHECK (kind IN ('refund', 'void')),
    amount_yen  bigint NOT NULL CHECK (amount_yen > 0),
    occurred_at timestamptz NOT NULL,
    applied     boolean NOT NULL DEFAULT false
);
CREATE INDEX payment_reversals_waiting ON payment_reversals (payment_id) WHERE NOT applied;

-- Steps of applications after submission (certificate issued, approved, rejected, withdrawn).
-- Kept whether or not the submission has arrived yet: turnaround and completion join them to
-- application_facts when asked.
CREATE TABLE application_steps (
    application_id uuid NOT NULL,
    step           text NOT NULL
                   CHECK (step IN ('certificate_issued', 'approved', 'rejected', 'withdrawn')),
    occurred_at    timestamptz NOT NULL,
    PRIMARY KEY (application_id, step)
);

-- The procedure catalog (手続き一覧) as last announced: coverage and the department of each
-- procedure. Newer facts win; an older event arriving late changes nothing.
CREATE TABLE procedures (
    procedure_code   text PRIMARY KEY,
    name_ja          text NOT NULL,
    department       text NOT NULL,
    procedure_group  smallint NOT NULL CHECK (procedure_group IN (1, 2)),
    online_since     date,
    planned_by_month date,          -- last month of the planned fiscal quarter
    planned_quarter  text,
    sample           boolean NOT NULL,
    as_of            timestamptz NOT NULL
);
