-- Registry (facilities, terminals), terminal transactions, payments, receipts and the ledger.

-- 施設: loaded from contracts/facilities.py at start-up (upsert), referenced by code.
CREATE TABLE facilities (
    code       text PRIMARY KEY,
    name_ja    text NOT NULL,
    kind       text NOT NULL,
    paid_for   text NOT NULL
);

-- 決済端末: a multi-payment terminal or a POS register, registered to one facility.
CREATE TABLE terminals (
    terminal_id   text PRIMARY KEY,
    facility_code text NOT NULL REFERENCES facilities (code),
    kind          text NOT NULL CHECK (kind IN ('multi_payment', 'pos_register')),
    nats_user     text NOT NULL UNIQUE,
    registered_at timestamptz NOT NULL DEFAULT now()
);

-- A payment (capture) and what has happened to it since. Card data: token and last four only.
CREATE TABLE payments (
    payment_id      uuid PRIMARY KEY,
    facility_code   text NOT NULL REFERENCES facilities (code),
    terminal_id     text REFERENCES terminals (terminal_id),
    channel         text NOT NULL CHECK (channel IN ('terminal', 'online')),
    method          text NOT NULL CHECK (method IN ('qr', 'emoney', 'credit', 'cash')),
    brand           text,
    amount_yen      bigint NOT NULL CHECK (amount_yen > 0),
    refunded_yen    bigint NOT NULL DEFAULT 0 CHECK (refunded_yen >= 0),
    voided          boolean NOT NULL DEFAULT false,
    item            text NOT NULL,
    occurred_at     timestamptz NOT NULL,
    receipt_number  text NOT NULL UNIQUE,
    application_id  uuid,
    card_token      text,
    card_last4      text CHECK (card_last4 ~ '^[0-9]{4}$'),
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    CHECK (refunded_yen <= amount_yen),
    CHECK (NOT (voided AND refunded_yen > 0))
);
CREATE INDEX payments_by_facility_day ON payments (facility_code, occurred_at);

-- Every terminal transaction ever posted: the (terminal, transaction id) key dedupes for ever,
-- long after JetStream's duplicate window.
CREATE TABLE terminal_transactions (
    terminal_id    text NOT NULL REFERENCES terminals (terminal_id),
    transaction_id text NOT NULL,
    kind           text NOT NULL CHECK (kind IN ('capture', 'refund', 'void')),
    payment_id     uuid NOT NULL REFERENCES payments (payment_id),
    amount_yen     bigint NOT NULL CHECK (amount_yen > 0),
    occurred_at    timestamptz NOT NULL,
    recorded_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (terminal_id, transaction_id)
);

CREATE TABLE refunds (
    refund_id     uuid PRIMARY KEY,
    payment_id    uuid NOT NULL REFERENCES payments (payment_id),
    amount_yen    bigint NOT NULL CHECK (amount_yen > 0),
    occurred_at   timestamptz NOT NULL,
    staff_id      text,
    recorded_at   timestamptz NOT NULL DEFAULT now()
);

-- 領収書: numbered per facility and fiscal year (April-March, Asia/Tokyo).
CREATE TABLE receipt_counters (
    facility_code text NOT NULL REFERENCES facilities (code),
    fiscal_year   integer NOT NULL,
    last_number   integer NOT NULL,
    PRIMARY KEY (facility_code, fiscal_year)
);
CREATE TABLE receipts (
    receipt_number text PRIMARY KEY,
    facility_code  text NOT NULL REFERENCES facilities (code),
    fiscal_year    integer NOT NULL,
    serial         integer NOT NULL CHECK (serial > 0),
    payment_id     uuid NOT NULL UNIQUE REFERENCES payments (payment_id),
    issued_at      timestamptz NOT NULL DEFAULT now(),
    prints         integer NOT NULL DEFAULT 0 CHECK (prints >= 0),
    UNIQUE (facility_code, fiscal_year, serial)
);

-- The ledger (総勘定元帳): append-only, double-entry. A posting is a set of entries whose
-- debits equal its credits; corrections are new postings that reverse old ones.
CREATE TABLE postings (
    posting_id    uuid PRIMARY KEY,
    facility_code text NOT NULL REFERENCES facilities (code),
    kind          text NOT NULL,
    payment_id    uuid REFERENCES payments (payment_id),
    reverses      uuid REFERENCES postings (posting_id),
    business_date date NOT NULL,
    posted_at     timestamptz NOT NULL DEFAULT now(),
    memo          text NOT NULL DEFAULT ''
);
CREATE UNIQUE INDEX postings_reversed_once ON postings (reverses) WHERE reverses IS NOT NULL;

CREATE TABLE ledger_entries (
    entry_id    bigserial PRIMARY KEY,
    posting_id  uuid NOT NULL REFERENCES postings (posting_id),
    account     text NOT NULL,
    debit_yen   bigint NOT NULL DEFAULT 0 CHECK (debit_yen >= 0),
    credit_yen  bigint NOT NULL DEFAULT 0 CHECK (credit_yen >= 0),
    CHECK ((debit_yen > 0) <> (credit_yen > 0))
);
CREATE INDEX ledger_entries_by_posting ON ledger_entries (posting_id);
CREATE INDEX ledger_entries_by_account ON ledger_entries (account);

-- Balance is proven at commit: a deferred constraint trigger checks every posting touched.
CREATE FUNCTION ledger_posting_balances() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    debits bigint;
    credits bigint;
BEGIN
    SELECT coalesce(sum(debit_yen), 0), coalesce(sum(credit_yen), 0)
      INTO debits, credits
      FROM ledger_entries WHERE posting_id = NEW.posting_id;
    IF debits <> credits THEN
        RAISE EXCEPTION 'posting % does not balance: debits % <> credits %',
            NEW.posting_id, debits, credits USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER ledger_entries_balance
    AFTER INSERT ON ledger_entries
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION ledger_posting_balances();

-- Append-only: no UPDATE, DELETE or TRUNCATE on the ledger, ever.
CREATE FUNCTION ledger_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the ledger is append-only: % on % refused (post a reversing entry)',
        TG_OP, TG_TABLE_NAME USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER postings_append_only BEFORE UPDATE OR DELETE ON postings
    FOR EACH ROW EXECUTE FUNCTION ledger_is_append_only();
CREATE TRIGGER postings_no_truncate BEFORE TRUNCATE ON postings
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_is_append_only();
CREATE TRIGGER ledger_entries_append_only BEFORE UPDATE OR DELETE ON ledger_entries
    FOR EACH ROW EXECUTE FUNCTION ledger_is_append_only();
CREATE TRIGGER ledger_entries_no_truncate BEFORE TRUNCATE ON ledger_entries
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_is_append_only();
