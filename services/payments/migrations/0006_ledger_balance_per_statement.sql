-- The balance check moves from one deferred trigger call per ledger entry (two queries per
-- capture at commit: the cost of ingestion at thousands per second) to one call per INSERT
-- statement, over every posting the statement touched. The rule gets stricter, not looser: a
-- posting must balance at the end of the statement that writes its entries (store.py writes
-- all of a batch's entries in one statement), not merely by the end of the transaction.
DROP TRIGGER ledger_entries_balance ON ledger_entries;
DROP FUNCTION ledger_posting_balances();

CREATE FUNCTION ledger_postings_balance() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    bad record;
BEGIN
    SELECT e.posting_id, sum(e.debit_yen) AS debits, sum(e.credit_yen) AS credits
      INTO bad
      FROM ledger_entries e
     WHERE e.posting_id IN (SELECT DISTINCT posting_id FROM new_entries)
     GROUP BY e.posting_id
    HAVING sum(e.debit_yen) <> sum(e.credit_yen)
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'posting % does not balance: debits % <> credits %',
            bad.posting_id, bad.debits, bad.credits USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER ledger_entries_balance
    AFTER INSERT ON ledger_entries
    REFERENCING NEW TABLE AS new_entries
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_postings_balance();
