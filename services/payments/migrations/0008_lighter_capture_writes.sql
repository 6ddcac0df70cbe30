-- Ingestion speed (issue 7, docs/benchmarks.md): a capture wrote nine rows, twenty index
-- entries and ran ten foreign-key checks (one query each) in PostgreSQL; the ledger's INSERT
-- alone was 39 % of the database's statement time. Three writes go, no rule is lost:
--
-- 1. The ledger entries' foreign key to postings is checked once per INSERT statement, by the
--    statement-level trigger that already checks that every posting balances (the per-row key
--    ran a `SELECT ... FOR KEY SHARE` per entry). Postings can never be deleted or updated
--    (ledger_is_append_only), so the key's other half (what happens to entries when a posting
--    goes) was never needed. The balance check itself now reads only the statement's new
--    entries (see the function): it used to scan the whole ledger's index per statement.
-- 2. ledger_entries_by_account goes: a handful of account names over millions of rows; the one
--    query by account (store.ledger_day) filters postings first and reaches entries through
--    ledger_entries_by_posting.
-- 3. receipts (領収書) were one row per payment repeating its number, facility and payment id,
--    with three indexes and two foreign keys; their own facts (fiscal year, serial, prints)
--    become columns of payments, and `receipts` stays as a view with the same columns for
--    readers. A receipt number is still unique (payments.receipt_number) and the serial is
--    still unique per facility and fiscal year, because the number is made of the three.

ALTER TABLE ledger_entries DROP CONSTRAINT ledger_entries_posting_id_fkey;
DROP INDEX ledger_entries_by_account;

CREATE OR REPLACE FUNCTION ledger_postings_balance() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    bad record;
    ids uuid[];
BEGIN
    -- Every posting balanced before this statement (this trigger has checked every INSERT
    -- since 0006, and entries can be neither updated nor deleted), so each posting still
    -- balances exactly when the statement's own new entries balance per posting. The check
    -- reads only the transition table: checking the whole postings read ledger_entries, and
    -- with random uuids the planner chose a merge join over the entire index, so every batch
    -- of captures cost time in proportion to the whole ledger.
    SELECT posting_id, sum(debit_yen) AS debits, sum(credit_yen) AS credits
      INTO bad
      FROM new_entries
     GROUP BY posting_id
    HAVING sum(debit_yen) <> sum(credit_yen)
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'posting % does not balance: debits % <> credits %',
            bad.posting_id, bad.debits, bad.credits USING ERRCODE = 'check_violation';
    END IF;
    -- The foreign key, once per statement: one index probe per posting (= ANY(array) keeps
    -- the planner on the primary key whatever the table's size).
    ids := ARRAY(SELECT DISTINCT posting_id FROM new_entries);
    IF (SELECT count(*) FROM postings WHERE posting_id = ANY (ids)) <> cardinality(ids) THEN
        SELECT i AS posting_id INTO bad
          FROM unnest(ids) AS i
         WHERE NOT EXISTS (SELECT 1 FROM postings p WHERE p.posting_id = i)
         LIMIT 1;
        RAISE EXCEPTION 'ledger entry for posting %, which does not exist', bad.posting_id
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NULL;
END $$;

ALTER TABLE payments
    ADD COLUMN fiscal_year integer,
    ADD COLUMN receipt_serial integer CHECK (receipt_serial > 0),
    ADD COLUMN receipt_prints integer NOT NULL DEFAULT 0 CHECK (receipt_prints >= 0);
UPDATE payments p
   SET fiscal_year = r.fiscal_year, receipt_serial = r.serial, receipt_prints = r.prints
  FROM receipts r
 WHERE r.payment_id = p.payment_id;
ALTER TABLE payments
    ALTER COLUMN fiscal_year SET NOT NULL,
    ALTER COLUMN receipt_serial SET NOT NULL;
DROP TABLE receipts;

CREATE VIEW receipts AS
    SELECT receipt_number, facility_code, fiscal_year, receipt_serial AS serial, payment_id,
           recorded_at AS issued_at, receipt_prints AS prints
      FROM payments;
