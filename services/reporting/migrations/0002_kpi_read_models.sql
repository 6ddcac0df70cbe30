-- KPI read-models. Months and days are calendar buckets in Asia/Tokyo; times are UTC.
-- applications_by_channel gives way to applications_monthly (by channel, procedure and month);
-- its counts are rebuilt from the streams by `cityhall reporting rebuild`.
DROP TABLE applications_by_channel;

-- One row per application (申請): the facts later events (certificate issued, withdrawn) need.
CREATE TABLE application_facts (
    application_id uuid PRIMARY KEY,
    procedure_code text NOT NULL,
    channel        text NOT NULL CHECK (channel IN ('online', 'counter', 'mail')),
    submitted_at   timestamptz NOT NULL,
    month          date NOT NULL
);

-- Online usage rate (件数ベース): applications by month, procedure and channel.
CREATE TABLE applications_monthly (
    month          date NOT NULL CHECK (extract(day FROM month) = 1),
    procedure_code text NOT NULL,
    channel        text NOT NULL CHECK (channel IN ('online', 'counter', 'mail')),
    count          bigint NOT NULL CHECK (count >= 0),
    PRIMARY KEY (month, procedure_code, channel)
);

-- One row per capture (決済): what refunds and voids need to find what they reverse.
CREATE TABLE payment_captures (
    payment_id    uuid PRIMARY KEY,
    facility_code text NOT NULL,
    method        text NOT NULL CHECK (method IN ('qr', 'emoney', 'credit', 'cash')),
    brand         text NOT NULL,  -- '' when none (cash)
    amount_yen    bigint NOT NULL CHECK (amount_yen > 0),
    refunded_yen  bigint NOT NULL DEFAULT 0 CHECK (refunded_yen BETWEEN 0 AND amount_yen),
    voided        boolean NOT NULL DEFAULT false,
    captured_at   timestamptz NOT NULL,
    day           date NOT NULL
);

-- Cashless share and revenue: payments standing, by day, facility, method and brand.
CREATE TABLE payments_daily (
    day           date NOT NULL,
    facility_code text NOT NULL,
    method        text NOT NULL CHECK (method IN ('qr', 'emoney', 'credit', 'cash')),
    brand         text NOT NULL,
    count         bigint NOT NULL CHECK (count >= 0),
    amount_yen    bigint NOT NULL CHECK (amount_yen >= 0),
    PRIMARY KEY (day, facility_code, method, brand)
);
