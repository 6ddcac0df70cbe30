-- Online usage by month and procedure with the channels as columns: a year of open data or
-- the usage CSV is one row per month and procedure (40,000), which summing applications_monthly
-- (63,000 rows, one per channel) made PostgreSQL hash and sort per request (about 70 ms on
-- this project's machine); read in its key's order it is about 12 ms. Kept by the projection
-- in the same statement as applications_monthly; store.py reads it for every usage query
-- that needs months and procedures.
CREATE TABLE applications_month_procedure (
    month          date NOT NULL CHECK (extract(day FROM month) = 1),
    procedure_code text NOT NULL,
    online         bigint NOT NULL CHECK (online >= 0),
    counter        bigint NOT NULL CHECK (counter >= 0),
    mail           bigint NOT NULL CHECK (mail >= 0),
    PRIMARY KEY (month, procedure_code)
);
CREATE INDEX applications_month_procedure_procedure
    ON applications_month_procedure (procedure_code, month);

INSERT INTO applications_month_procedure
SELECT month, procedure_code,
       coalesce(sum(count) FILTER (WHERE channel = 'online'), 0),
       coalesce(sum(count) FILTER (WHERE channel = 'counter'), 0),
       coalesce(sum(count) FILTER (WHERE channel = 'mail'), 0)
FROM applications_monthly GROUP BY month, procedure_code;
