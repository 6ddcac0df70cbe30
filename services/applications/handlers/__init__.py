"""The applications service's handlers: one function per command or event, which loads,
decides (domain) and saves state and events in one transaction. HTTP commands run inside
``transactions.in_transaction``, which also keeps the Idempotency-Key and the response it
produced in that same transaction. ``submission`` submits applications, ``lifecycle`` moves them
on, ``payments`` takes the fee events and ``catalog_import`` imports the catalog."""
