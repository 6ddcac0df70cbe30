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

-- The percentiles of the keys given (all keys when both arrays are null).
CREATE FUNCTION turnaround_refresh_percentiles(months date[], codes text[])
RETURNS void LANGUAGE sql AS $$
    WITH touched AS (
        SELECT DISTINCT t.month, t.code COLLATE "C" AS procedure_code
        FROM unnest(months, codes) AS t(month, code)),
    bins AS (
        SELECT h.month, h.procedure_code, h.bin,
               (sum(h.count) OVER (PARTITION BY h.month, h.procedure_code ORDER BY h.bin))::bigint AS upto,
               (sum(h.count) OVER (PARTITION BY h.month, h.procedure_code))::bigint AS n,
               min(h.seconds::float8 / h.count)
                   OVER (PARTITION BY h.month, h.procedure_code ORDER BY h.bin DESC) AS tail
        FROM turnaround_histogram h
        WHERE months IS NULL OR (h.month, h.procedure_code) IN (SELECT * FROM touched)),
    ranked AS (
        SELECT month, procedure_code, n,
               min(tail) FILTER (WHERE upto > (n - 1) / 2) AS lo50,
               min(tail) FILTER (WHERE upto > n / 2) AS hi50,
               min(tail) FILTER (WHERE upto > 9 * (n - 1) / 10) AS lo90,
               min(tail) FILTER (WHERE upto > (9 * (n - 1) + 9) / 10) AS hi90
        FROM bins GROUP BY month, procedure_code, n)
    UPDATE turnaround_monthly t
    SET median_seconds = r.lo50 + ((n - 1) % 2)::float8 / 2 * (r.hi50 - r.lo50),
        p90_seconds = r.lo90 + ((9 * (n - 1)) % 10)::float8 / 10 * (r.hi90 - r.lo90)
    FROM ranked r
    WHERE t.month = r.month AND t.procedure_code = r.procedure_code;

    WITH bins AS (
        SELECT h.procedure_code, h.bin,
               (sum(h.count) OVER (PARTITION BY h.procedure_code ORDER BY h.bin))::bigint AS upto,
               (sum(h.count) OVER (PARTITION BY h.procedure_code))::bigint AS n,
               min(h.seconds::float8 / h.count)
                   OVER (PARTITION BY h.procedure_code ORDER BY h.bin DESC) AS tail
        FROM turnaround_procedure_histogram h
        WHERE codes IS NULL OR h.procedure_code = ANY (codes)),
    ranked AS (
        SELECT procedure_code, n,
               min(tail) FILTER (WHERE upto > (n - 1) / 2) AS lo50,
               min(tail) FILTER (WHERE upto > n / 2) AS hi50,
               min(tail) FILTER (WHERE upto > 9 * (n - 1) / 10) AS lo90,
               min(tail) FILTER (WHERE upto > (9 * (n - 1) + 9) / 10) AS hi90
        FROM bins GROUP BY procedure_code, n)
    UPDATE turnaround_by_procedure t
    SET median_seconds = r.lo50 + ((n - 1) % 2)::float8 / 2 * (r.hi50 - r.lo50),
        p90_seconds = r.lo90 + ((9 * (n - 1)) % 10)::float8 / 10 * (r.hi90 - r.lo90)
    FROM ranked r
    WHERE t.procedure_code = r.procedure_code;

    WITH bins AS (
        SELECT h.month, h.bin,
               (sum(h.count) OVER (PARTITION BY h.month ORDER BY h.bin))::bigint AS upto,
               (sum(h.count) OVER (PARTITION BY h.month))::bigint AS n,
               min(h.seconds::float8 / h.count)
                   OVER (PARTITION BY h.month ORDER BY h.bin DESC) AS tail
        FROM turnaround_month_histogram h
        WHERE months IS NULL OR h.month = ANY (months)),
    ranked AS (
        SELECT month, n,
               min(tail) FILTER (WHERE upto > (n - 1) / 2) AS lo50,
               min(tail) FILTER (WHERE upto > n / 2) AS hi50,
               min(tail) FILTER (WHERE upto > 9 * (n - 1) / 10) AS lo90,
               min(tail) FILTER (WHERE upto > (9 * (n - 1) + 9) / 10) AS hi90
        FROM bins GROUP BY month, n)
    UPDATE turnaround_by_month t
    SET median_seconds = r.lo50 + ((n - 1) % 2)::float8 / 2 * (r.hi50 - r.lo50),
        p90_seconds = r.lo90 + ((9 * (n - 1)) % 10)::float8 / 10 * (r.hi90 - r.lo90)
    FROM ranked r
    WHERE t.month = r.month;
$$;

SELECT turnaround_refresh_percentiles(NULL, NULL);

-- Answers kept by a running process do not change (same figures), but see 0008.
UPDATE projection_versions SET version = version + 1;
