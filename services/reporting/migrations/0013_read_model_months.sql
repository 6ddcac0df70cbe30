-- A version per month of a read-model that answers are built from month by month: the year's
-- open data is twelve months of online usage by procedure (40,000 rows), and an event batch
-- changes the rows of one month, the current one, nearly always. projection_versions (0008)
-- says only that the family changed; with these versions the API rebuilds the months whose
-- rows changed and reuses the other months' encoded rows (services/reporting/answers.py,
-- MonthParts).
--
-- Kept by statement triggers on the table itself, so every writer bumps them in its own
-- transaction without knowing of them: the projections, a rebuild's swap (TRUNCATE, then
-- INSERT), a migration's backfill. Each change takes a new number from one sequence, which
-- never gives a number twice; it starts at the migration's time in microseconds (as 0008), so
-- a schema dropped and made again under a running process does not meet its old numbers.
CREATE SEQUENCE read_model_month_version;
SELECT setval('read_model_month_version', (extract(epoch FROM clock_timestamp()) * 1000000)::bigint);

CREATE TABLE read_model_months (
    table_name text COLLATE "C" NOT NULL,
    month      date NOT NULL CHECK (extract(day FROM month) = 1),
    version    bigint NOT NULL,
    PRIMARY KEY (table_name, month)
);

CREATE FUNCTION read_model_months_changed() RETURNS trigger LANGUAGE plpgsql
    SET search_path FROM CURRENT  -- the schema it was made in, whoever writes
AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN  -- every month it had; the rows written next add their own
        UPDATE read_model_months SET version = nextval('read_model_month_version')
         WHERE table_name = TG_TABLE_NAME;
    ELSIF TG_OP = 'INSERT' THEN
        INSERT INTO read_model_months AS v (table_name, month, version)
        SELECT TG_TABLE_NAME, m.month, nextval('read_model_month_version')
          FROM (SELECT DISTINCT month FROM new_rows) AS m
        ON CONFLICT (table_name, month) DO UPDATE SET version = EXCLUDED.version;
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO read_model_months AS v (table_name, month, version)
        SELECT TG_TABLE_NAME, m.month, nextval('read_model_month_version')
          FROM (SELECT month FROM new_rows UNION SELECT month FROM old_rows) AS m
        ON CONFLICT (table_name, month) DO UPDATE SET version = EXCLUDED.version;
    ELSE  -- DELETE
        INSERT INTO read_model_months AS v (table_name, month, version)
        SELECT TG_TABLE_NAME, m.month, nextval('read_model_month_version')
          FROM (SELECT DISTINCT month FROM old_rows) AS m
        ON CONFLICT (table_name, month) DO UPDATE SET version = EXCLUDED.version;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER applications_month_procedure_months_inserted
    AFTER INSERT ON applications_month_procedure
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT
    EXECUTE FUNCTION read_model_months_changed();
CREATE TRIGGER applications_month_procedure_months_updated
    AFTER UPDATE ON applications_month_procedure
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT
    EXECUTE FUNCTION read_model_months_changed();
CREATE TRIGGER applications_month_procedure_months_deleted
    AFTER DELETE ON applications_month_procedure
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT
    EXECUTE FUNCTION read_model_months_changed();
CREATE TRIGGER applications_month_procedure_months_truncated
    AFTER TRUNCATE ON applications_month_procedure
    FOR EACH STATEMENT EXECUTE FUNCTION read_model_months_changed();

INSERT INTO read_model_months (table_name, month, version)
SELECT 'applications_month_procedure', month, nextval('read_model_month_version')
  FROM (SELECT DISTINCT month FROM applications_month_procedure) AS m;
