-- A terminal transaction is claimed (deduplicated) first and its payment written after, in the
-- same transaction: the reference to the payment is checked at commit.
ALTER TABLE terminal_transactions
    ALTER CONSTRAINT terminal_transactions_payment_id_fkey DEFERRABLE INITIALLY DEFERRED;
