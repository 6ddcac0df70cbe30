-- Certificate turnaround's median and 90th percentile kept beside the counts, at the three
-- levels that have one row per answer row (a month and procedure, a procedure, a month), so an
-- answer at those levels reads them instead of the bins: a year's turnaround by procedure read
-- 14,851 bins and computed 349 percentiles per request (about 20 of its 30 ms). The projection
-- recomputes them for the keys a batch gave new times (turnaround_refresh_percentiles, after
-- the histograms are written); answers that sum several rows (a department, a group, a period
-- of several months) still interpolate over the summed bins (store.turnaround_by).
--
-- The same interpolation, in the same float operations, as store._median_p90 (percentile_cont
-- over the bins: the value at 0-based rank r is the smallest mean of the bins whose running
-- count exceeds r; p = num / den interpolates between ranks floor(p (n - 1)) and ceil), so
-- either way gives identical figures.
ALTER TABLE turnaround_monthly ADD COLUMN median_seconds float8, ADD COLUMN p90_seconds float8;
ALTER TABLE turnaround_by_procedure
    ADD COLUMN median_seconds float8, ADD COLUMN p90_seconds float8;
ALTER TABLE turnaround_by_month ADD COLUMN median_seconds float8, ADD COLUMN p90_seconds float8;

-- The percentiles of the keys given (all keys when both arrays are null): each level's bins,
-- ranked once (a level's rows are told apart by which keys are null), then each table updated.
CREATE FUNCTION turnaround_refresh_percentiles(months date[], codes text[])
RETURNS void LANGUAGE sql AS $$
    WITH touched AS (
        SELECT DISTINCT t.month, t.code COLLATE "C" AS procedure_code
        FROM unnest(months, codes) AS t(month, code)),
    levels AS (
        SELECT h.month, h.procedure_code, h.bin, h.count, h.seconds
        FROM turnaround_histogram h
        WHERE months IS NULL OR (h.month, h.procedure_code) IN (SELECT * FROM touched)
        UNION ALL
        SELECT NULL, h.procedure_code, h.bin, h.count, h.seconds
        FROM turnaround_procedure_histogram h
        WHERE codes IS NULL OR h.procedure_code = ANY (codes)
        UNION ALL
        SELECT h.month, NULL, h.bin, h.count, h.seconds
        FROM turnaround_month_histogram h
        WHERE months IS NULL OR h.month = ANY (months)),
    bins AS (
        SELECT month, procedure_code,
               (sum(count) OVER (PARTITION BY month, procedure_code ORDER BY bin))::bigint
                   AS upto,
               (sum(count) OVER (PARTITION BY month, procedure_code))::bigint AS n,
               min(seconds::float8 / count)
                   OVER (PARTITION BY month, procedure_code ORDER BY bin DESC) AS tail
        FROM levels),
    ranked AS (
        SELECT month, procedure_code, n,
               min(tail) FILTER (WHERE upto > (n - 1) / 2) AS lo50,
               min(tail) FILTER (WHERE upto > n / 2) AS hi50,
               min(tail) FILTER (WHERE upto > 9 * (n - 1) / 10) AS lo90,
               min(tail) FILTER (WHERE upto > (9 * (n - 1) + 9) / 10) AS hi90
        FROM bins GROUP BY month, procedure_code, n),
    percentiles AS (
        SELECT month, procedure_code,
               lo50 + ((n - 1) % 2)::float8 / 2 * (hi50 - lo50) AS median,
               lo90 + ((9 * (n - 1)) % 10)::float8 / 10 * (hi90 - lo90) AS p90
        FROM ranked),
    monthly AS (
        UPDATE turnaround_monthly t SET median_seconds = p.median, p90_seconds = p.p90
        FROM percentiles p
        WHERE t.month = p.month AND t.procedure_code = p.procedure_code),
    by_procedure AS (
        UPDATE turnaround_by_procedure t SET median_seconds = p.median, p90_seconds = p.p90
        FROM percentiles p
        WHERE p.month IS NULL AND t.procedure_code = p.procedure_code)
    UPDATE turnaround_by_month t SET median_seconds = p.median, p90_seconds = p.p90
    FROM percentiles p
    WHERE p.procedure_code IS NULL AND t.month = p.month;
$$;

SELECT turnaround_refresh_percentiles(NULL, NULL);

-- Answers kept by a running process do not change (same figures), but see 0008.
UPDATE projection_versions SET version = version + 1;
