-- The read-models' version per event family, bumped by each projection batch in the same
-- transaction as its changes (and by a rebuild's swap), so the API can keep each encoded KPI
-- answer in memory and know with one primary-key read whether it still holds
-- (services/reporting/answers.py). A row lock per family: one consumer writes each.
-- Versions start at the migration's time in microseconds, so a schema dropped and made again
-- under a running process does not meet its old numbers.
-- A later migration that changes the rows of a read-model must bump these too.
CREATE TABLE projection_versions (
    family  text PRIMARY KEY CHECK (family IN ('applications', 'payments')),
    version bigint NOT NULL
);
INSERT INTO projection_versions (family, version)
SELECT family, (extract(epoch FROM clock_timestamp()) * 1000000)::bigint
FROM (VALUES ('applications'), ('payments')) AS f(family);
