-- The payments service's own tables arrive with its issue; the runtime's outbox and inbox
-- tables are created by the runtime migration in this schema.
SELECT 1;
