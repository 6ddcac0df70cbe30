-- A version per month of the read-models that answers are built from month by month: the
-- year's open data is twelve months of online usage by procedure (40,000 rows), the year's
-- revenue twelve months of facility-days (12,000 rows) beside their settlements, and an event
-- batch changes the rows of one month, the current one, nearly always. projection_versions
-- (0008) says only that a family changed; with these versions the API reads and encodes again
-- the months whose rows changed and reuses the other months' encoded rows
-- (services/reporting/answers.py, MonthParts).
--
-- Kept by statement triggers on the tables themselves, so every writer bumps them in its own
-- transaction without knowing of them: the projections, a rebuild's swap (TRUNCATE, then
-- INSERT), a migration's backfill. Each change takes a new number from one sequence, which
-- never gives a number twice: the greatest version of a month over several tables moves
-- whenever any of them changes that month. The sequence starts at the migration's time in
-- microseconds (as 0008), so a schema dropped and made again under a running process does not
-- meet its old numbers.
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
DECLARE
    -- the rows' date column, whose values' months changed; '' for a table without months
    -- (the catalog), versioned whole under the month 0001-01
    picked text := CASE WHEN TG_ARGV[0] = '' THEN 'DATE ''0001-01-01'''
                        ELSE format('%I', TG_ARGV[0]) END;
    changed text;
BEGIN
    IF TG_OP = 'TRUNCATE' THEN  -- every month it had; the rows written next add their own
        UPDATE read_model_months SET version = nextval('read_model_month_version')
         WHERE table_name = TG_TABLE_NAME;
        RETURN NULL;
    END IF;
    changed := CASE TG_OP
        WHEN 'INSERT' THEN format('SELECT %s FROM new_rows', picked)
        WHEN 'DELETE' THEN format('SELECT %s FROM old_rows', picked)
        ELSE format('SELECT %1$s FROM new_rows UNION ALL SELECT %1$s FROM old_rows', picked)
    END;
    -- (a statement that changed no row changes no month)
    EXECUTE format(
        'INSERT INTO read_model_months (table_name, month, version)
         SELECT $1, m.month, nextval(''read_model_month_version'')
           FROM (SELECT DISTINCT date_trunc(''month'', c.d::timestamp)::date AS month
                   FROM (%s) AS c(d)) AS m
         ON CONFLICT (table_name, month) DO UPDATE SET version = EXCLUDED.version',
        changed)
    USING TG_TABLE_NAME;
    RETURN NULL;
END $$;

-- One set of triggers per table, named after it: (table, its date column; '' for a table
-- without months). The usage and turnaround tables and the catalog also let an answer for a
-- bounded period be kept while batches change only months outside it (api._kept: the
-- greatest version of the period's months and of the catalog moves with any change to them).
DO $$
DECLARE
    t record;
BEGIN
    FOR t IN SELECT * FROM (VALUES ('applications_month_procedure', 'month'),
                                   ('applications_by_month', 'month'),
                                   ('turnaround_monthly', 'month'),
                                   ('turnaround_by_month', 'month'),
                                   ('turnaround_histogram', 'month'),
                                   ('turnaround_month_histogram', 'month'),
                                   ('procedures', ''),
                                   ('payments_facility_days', 'day'),
                                   ('settlements', 'business_date')) AS v(name, col) LOOP
        EXECUTE format('CREATE TRIGGER %1$s_months_inserted AFTER INSERT ON %1$I
                        REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT
                        EXECUTE FUNCTION read_model_months_changed(%2$L)', t.name, t.col);
        EXECUTE format('CREATE TRIGGER %1$s_months_updated AFTER UPDATE ON %1$I
                        REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
                        FOR EACH STATEMENT EXECUTE FUNCTION read_model_months_changed(%2$L)',
                       t.name, t.col);
        EXECUTE format('CREATE TRIGGER %1$s_months_deleted AFTER DELETE ON %1$I
                        REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT
                        EXECUTE FUNCTION read_model_months_changed(%2$L)', t.name, t.col);
        EXECUTE format('CREATE TRIGGER %1$s_months_truncated AFTER TRUNCATE ON %1$I
                        FOR EACH STATEMENT EXECUTE FUNCTION read_model_months_changed(%2$L)',
                       t.name, t.col);
        IF t.col = '' THEN
            INSERT INTO read_model_months (table_name, month, version)
            VALUES (t.name, DATE '0001-01-01', nextval('read_model_month_version'));
        ELSE
            EXECUTE format('INSERT INTO read_model_months (table_name, month, version)
                            SELECT %1$L, m.month, nextval(''read_model_month_version'')
                              FROM (SELECT DISTINCT date_trunc(''month'', %2$I::timestamp)::date
                                      AS month FROM %1$I) AS m', t.name, t.col);
        END IF;
    END LOOP;
END $$;
