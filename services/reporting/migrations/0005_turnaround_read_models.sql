-- Certificate turnaround and completion, kept by the projection instead of joined and sorted at
-- query time (a year of the city is about a million applications: percentiles over all of
-- them took seconds per request).
--
-- turnaround_monthly: per month of submission and procedure, applications submitted, completed
-- (certificate issued or approved), closed without completion (rejected or withdrawn, and not
-- completed) and with a certificate. The projection adds what each batch changes; a completion
-- that arrives after a rejection moves the application from closed to completed, so a batch
-- may lower `closed` (no CHECK: an INSERT's candidate row of a negative change would trip it
-- before ON CONFLICT is considered; the figures themselves never go below 0).
CREATE TABLE turnaround_monthly (
    month               date NOT NULL CHECK (extract(day FROM month) = 1),
    procedure_code      text NOT NULL,
    submitted           bigint NOT NULL,
    completed           bigint NOT NULL,
    closed              bigint NOT NULL,
    certificates_issued bigint NOT NULL,
    PRIMARY KEY (month, procedure_code)
);

-- turnaround_histogram: submitted -> certificate issued times, by month of submission and
-- procedure, in logarithmic bins 2% wide (bin 0: under a second either way; bin k > 0:
-- [1.02^(k-1), 1.02^k) seconds; bin -k: the same, negative). Each bin keeps how many times fell
-- in it and their exact sum, so a bin that holds one distinct time gives it back exactly and
-- percentiles are interpolated between bin means (within 2% of the exact figure; exact when
-- no two different times share a bin).
CREATE TABLE turnaround_histogram (
    month          date NOT NULL,
    procedure_code text NOT NULL,
    bin            integer NOT NULL,
    count          bigint NOT NULL CHECK (count > 0),
    seconds        numeric NOT NULL,   -- the sum of the times in the bin
    PRIMARY KEY (month, procedure_code, bin)
);

CREATE FUNCTION turnaround_bin(seconds numeric) RETURNS integer
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN CASE
        WHEN seconds >= 1 THEN 1 + floor(ln(seconds::float8) / ln(1.02::float8))::integer
        WHEN seconds <= -1 THEN -1 - floor(ln(-seconds::float8) / ln(1.02::float8))::integer
        ELSE 0
    END;

-- What the read-models held before this migration, counted once.
WITH outcome AS (
    SELECT application_id,
           min(occurred_at) FILTER (WHERE step = 'certificate_issued') AS issued,
           bool_or(step IN ('certificate_issued', 'approved')) AS completed,
           bool_or(step IN ('rejected', 'withdrawn')) AS closed
    FROM application_steps GROUP BY application_id),
apps AS (
    SELECT a.month, a.procedure_code, coalesce(o.completed, false) AS completed,
           coalesce(o.closed AND NOT o.completed, false) AS closed,
           extract(epoch FROM o.issued - a.submitted_at) AS seconds
    FROM application_facts a LEFT JOIN outcome o USING (application_id)),
monthly AS (
    INSERT INTO turnaround_monthly
    SELECT month, procedure_code, count(*), count(*) FILTER (WHERE completed),
           count(*) FILTER (WHERE closed), count(seconds)
    FROM apps GROUP BY month, procedure_code)
INSERT INTO turnaround_histogram
SELECT month, procedure_code, turnaround_bin(seconds), count(*), sum(seconds)
FROM apps WHERE seconds IS NOT NULL
GROUP BY month, procedure_code, turnaround_bin(seconds);
