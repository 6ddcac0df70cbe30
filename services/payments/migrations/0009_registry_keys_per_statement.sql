-- Ingestion speed (issue 7, docs/benchmarks.md): the foreign keys on the capture path ran one
-- `SELECT ... FOR KEY SHARE` per row and key: five per capture (a payment's facility and
-- terminal, a posting's facility and payment, a terminal transaction's terminal), about 5 µs
-- each, a third of PostgreSQL's work per capture once 0008 had removed the rest. They are now
-- checked once per statement, over the statement's new rows, with one index probe per
-- distinct key; the same error class (foreign_key_violation) names the key. The other half of
-- a foreign key, that a referenced row cannot go, becomes explicit: facilities, terminals and
-- payments are never deleted and their keys never change (nothing in payments ever did; now
-- the database refuses it). terminal_transactions.payment_id keeps its deferred foreign key:
-- a claim is written before its payment (0005), which a statement-level check cannot wait for.

CREATE FUNCTION references_exist() RETURNS trigger LANGUAGE plpgsql AS $$
-- TG_ARGV: the new rows' column, the referenced table, its key column, the key's type.
DECLARE
    col text := TG_ARGV[0];
    ref_table text := TG_ARGV[1];
    ref_col text := TG_ARGV[2];
    key_type text := TG_ARGV[3];
    keys text[];
    found bigint;
    missing text;
BEGIN
    EXECUTE format('SELECT array_agg(DISTINCT %1$I::text) FROM new_rows WHERE %1$I IS NOT NULL',
                   col)
       INTO keys;
    IF keys IS NULL THEN
        RETURN NULL;
    END IF;
    -- = ANY (array) keeps the planner on the referenced key's index whatever the table's size.
    EXECUTE format('SELECT count(*) FROM %I WHERE %I = ANY ($1::%s[])', ref_table, ref_col, key_type)
       INTO found
      USING keys;
    IF found <> cardinality(keys) THEN
        EXECUTE format('SELECT k FROM unnest($1) AS k
                         WHERE NOT EXISTS (SELECT 1 FROM %I r WHERE r.%I::text = k) LIMIT 1',
                       ref_table, ref_col)
           INTO missing
          USING keys;
        RAISE EXCEPTION '% % of % is not a key of %', col, missing, TG_TABLE_NAME, ref_table
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NULL;
END $$;

CREATE FUNCTION keys_are_kept() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% of % refused: other rows refer to its key (% are kept)',
        TG_OP, TG_TABLE_NAME, TG_TABLE_NAME USING ERRCODE = 'foreign_key_violation';
END $$;

ALTER TABLE payments DROP CONSTRAINT payments_facility_code_fkey;
ALTER TABLE payments DROP CONSTRAINT payments_terminal_id_fkey;
ALTER TABLE postings DROP CONSTRAINT postings_facility_code_fkey;
ALTER TABLE postings DROP CONSTRAINT postings_payment_id_fkey;
ALTER TABLE terminal_transactions DROP CONSTRAINT terminal_transactions_terminal_id_fkey;

CREATE TRIGGER payments_facility_exists AFTER INSERT ON payments
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT
    EXECUTE FUNCTION references_exist('facility_code', 'facilities', 'code', 'text');
CREATE TRIGGER payments_facility_still_exists AFTER UPDATE ON payments
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT
    EXECUTE FUNCTION references_exist('facility_code', 'facilities', 'code', 'text');
CREATE TRIGGER payments_terminal_exists AFTER INSERT ON payments
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT
    EXECUTE FUNCTION references_exist('terminal_id', 'terminals', 'terminal_id', 'text');
CREATE TRIGGER payments_terminal_still_exists AFTER UPDATE ON payments
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT
    EXECUTE FUNCTION references_exist('terminal_id', 'terminals', 'terminal_id', 'text');
CREATE TRIGGER postings_facility_exists AFTER INSERT ON postings
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT
    EXECUTE FUNCTION references_exist('facility_code', 'facilities', 'code', 'text');
CREATE TRIGGER postings_payment_exists AFTER INSERT ON postings
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT
    EXECUTE FUNCTION references_exist('payment_id', 'payments', 'payment_id', 'uuid');
CREATE TRIGGER terminal_transactions_terminal_exists AFTER INSERT ON terminal_transactions
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT
    EXECUTE FUNCTION references_exist('terminal_id', 'terminals', 'terminal_id', 'text');
CREATE TRIGGER terminal_transactions_terminal_still_exists AFTER UPDATE ON terminal_transactions
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT
    EXECUTE FUNCTION references_exist('terminal_id', 'terminals', 'terminal_id', 'text');

CREATE TRIGGER facilities_are_kept BEFORE DELETE OR UPDATE OF code ON facilities
    FOR EACH ROW EXECUTE FUNCTION keys_are_kept();
CREATE TRIGGER terminals_are_kept BEFORE DELETE OR UPDATE OF terminal_id ON terminals
    FOR EACH ROW EXECUTE FUNCTION keys_are_kept();
CREATE TRIGGER payments_are_kept BEFORE DELETE OR UPDATE OF payment_id ON payments
    FOR EACH ROW EXECUTE FUNCTION keys_are_kept();
