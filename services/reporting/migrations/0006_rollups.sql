-- Roll-ups kept by the projection beside the finest buckets, so that each KPI query reads the
-- smallest table that has what it groups and filters by (a year of the city: ~190,000 rows in
-- payments_daily, ~63,000 in applications_monthly, ~40,000 and ~78,000 in the turnaround
-- tables; a query summing them took 20 to 350 ms). The projection adds the same changes to
-- each level in the same statement; store.py picks the level.

-- Payments: by month (every dimension), by day over all facilities, by facility and day.
CREATE TABLE payments_monthly (
    month         date NOT NULL CHECK (extract(day FROM month) = 1),
    facility_code text NOT NULL,
    method        text NOT NULL,
    brand         text NOT NULL,
    count         bigint NOT NULL CHECK (count >= 0),
    amount_yen    bigint NOT NULL CHECK (amount_yen >= 0),
    PRIMARY KEY (month, facility_code, method, brand)
);
CREATE TABLE payments_day_totals (
    day        date NOT NULL,
    method     text NOT NULL,
    brand      text NOT NULL,
    count      bigint NOT NULL CHECK (count >= 0),
    amount_yen bigint NOT NULL CHECK (amount_yen >= 0),
    PRIMARY KEY (day, method, brand)
);
CREATE TABLE payments_facility_days (
    day                 date NOT NULL,
    facility_code       text NOT NULL,
    count               bigint NOT NULL CHECK (count >= 0),
    amount_yen          bigint NOT NULL CHECK (amount_yen >= 0),
    cashless_count      bigint NOT NULL CHECK (cashless_count >= 0),
    cashless_amount_yen bigint NOT NULL CHECK (cashless_amount_yen >= 0),
    PRIMARY KEY (day, facility_code)
);
CREATE INDEX payments_facility_days_facility ON payments_facility_days (facility_code, day);
CREATE INDEX payments_daily_facility ON payments_daily (facility_code, day);

INSERT INTO payments_monthly
SELECT date_trunc('month', day)::date, facility_code, method, brand, sum(count), sum(amount_yen)
FROM payments_daily GROUP BY 1, 2, 3, 4;
INSERT INTO payments_day_totals
SELECT day, method, brand, sum(count), sum(amount_yen) FROM payments_daily GROUP BY 1, 2, 3;
INSERT INTO payments_facility_days
SELECT day, facility_code, sum(count), sum(amount_yen),
       coalesce(sum(count) FILTER (WHERE method <> 'cash'), 0),
       coalesce(sum(amount_yen) FILTER (WHERE method <> 'cash'), 0)
FROM payments_daily GROUP BY 1, 2;

-- Applications: all time by procedure and channel; by month and channel.
CREATE TABLE applications_by_procedure (
    procedure_code text NOT NULL,
    channel        text NOT NULL,
    count          bigint NOT NULL CHECK (count >= 0),
    PRIMARY KEY (procedure_code, channel)
);
CREATE TABLE applications_by_month (
    month   date NOT NULL,
    channel text NOT NULL,
    count   bigint NOT NULL CHECK (count >= 0),
    PRIMARY KEY (month, channel)
);
CREATE INDEX applications_monthly_procedure ON applications_monthly (procedure_code, month);

INSERT INTO applications_by_procedure
SELECT procedure_code, channel, sum(count) FROM applications_monthly GROUP BY 1, 2;
INSERT INTO applications_by_month
SELECT month, channel, sum(count) FROM applications_monthly GROUP BY 1, 2;

-- Turnaround and completion: all time by procedure; by month over all procedures.
CREATE TABLE turnaround_by_procedure (
    procedure_code      text PRIMARY KEY,
    submitted           bigint NOT NULL,
    completed           bigint NOT NULL,
    closed              bigint NOT NULL,
    certificates_issued bigint NOT NULL
);
CREATE TABLE turnaround_by_month (
    month               date PRIMARY KEY,
    submitted           bigint NOT NULL,
    completed           bigint NOT NULL,
    closed              bigint NOT NULL,
    certificates_issued bigint NOT NULL
);
CREATE TABLE turnaround_procedure_histogram (
    procedure_code text NOT NULL,
    bin            integer NOT NULL,
    count          bigint NOT NULL CHECK (count > 0),
    seconds        numeric NOT NULL,
    PRIMARY KEY (procedure_code, bin)
);
CREATE TABLE turnaround_month_histogram (
    month   date NOT NULL,
    bin     integer NOT NULL,
    count   bigint NOT NULL CHECK (count > 0),
    seconds numeric NOT NULL,
    PRIMARY KEY (month, bin)
);
CREATE INDEX turnaround_monthly_procedure ON turnaround_monthly (procedure_code, month);

INSERT INTO turnaround_by_procedure
SELECT procedure_code, sum(submitted), sum(completed), sum(closed), sum(certificates_issued)
FROM turnaround_monthly GROUP BY 1;
INSERT INTO turnaround_by_month
SELECT month, sum(submitted), sum(completed), sum(closed), sum(certificates_issued)
FROM turnaround_monthly GROUP BY 1;
INSERT INTO turnaround_procedure_histogram
SELECT procedure_code, bin, sum(count), sum(seconds) FROM turnaround_histogram GROUP BY 1, 2;
INSERT INTO turnaround_month_histogram
SELECT month, bin, sum(count), sum(seconds) FROM turnaround_histogram GROUP BY 1, 2;
