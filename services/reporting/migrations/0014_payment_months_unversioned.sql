-- The payment read-models' months are no longer versioned: only the year's open data and
-- revenue were built month by month from them (0013), and both are now built whole from their
-- family's version. The application tables' months stay versioned: answers for a bounded
-- period are kept under them.
DO $$
DECLARE
    t text;
    event text;
BEGIN
    FOREACH t IN ARRAY ARRAY['payments_facility_days', 'settlements'] LOOP
        FOREACH event IN ARRAY ARRAY['inserted', 'updated', 'deleted', 'truncated'] LOOP
            EXECUTE format('DROP TRIGGER %1$s_months_%2$s ON %1$I', t, event);
        END LOOP;
    END LOOP;
END $$;

DELETE FROM read_model_months WHERE table_name IN ('payments_facility_days', 'settlements');
