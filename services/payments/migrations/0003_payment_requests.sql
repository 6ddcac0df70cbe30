-- Online payment of application fees: a payment request per application, confirmed by the
-- payment provider's signed webhook, or expired.
CREATE TABLE payment_requests (
    request_id     uuid PRIMARY KEY,
    application_id uuid NOT NULL UNIQUE,
    reference      text NOT NULL UNIQUE,
    facility_code  text NOT NULL REFERENCES facilities (code),
    fee_item       text NOT NULL,
    amount_yen     bigint NOT NULL CHECK (amount_yen > 0),
    status         text NOT NULL DEFAULT 'pending'
                   CHECK (status IN ('pending', 'paid', 'expired')),
    requested_at   timestamptz NOT NULL,
    expires_at     timestamptz NOT NULL,
    payment_id     uuid REFERENCES payments (payment_id),
    closed_at      timestamptz,
    CHECK ((status = 'paid') = (payment_id IS NOT NULL))
);
CREATE INDEX payment_requests_pending_by_expiry ON payment_requests (expires_at)
    WHERE status = 'pending';

-- Every provider webhook event accepted, so a replay is refused for ever.
CREATE TABLE provider_events (
    event_id    text PRIMARY KEY,
    reference   text NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
);
