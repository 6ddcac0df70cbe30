"""asyncpg queries on the payments schema (its own tables only), one module per table family:
``terminals`` (facilities, terminals and their keys), ``terminal_transactions`` (the keys
terminals post under, and conflicting repeats), ``payments`` (captures, receipts, refunds,
voids), ``postings`` (the ledger), ``payment_requests`` (online fee requests and the
provider's notices), ``attention`` (the staff queue) and ``settlements`` (daily
reconciliation and revenue)."""
