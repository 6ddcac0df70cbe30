-- The payment sweep (issue 19): payments asks the provider about every request still open
-- (pending, or expired: money may come late) past a grace period, with back-off, so a payment
-- whose webhook was lost is found within minutes. next_check_at is when to ask next; checks
-- how often it was asked (the back-off grows with it). Open requests of before are due now.
ALTER TABLE payment_requests
    ADD COLUMN next_check_at timestamptz,
    ADD COLUMN checks integer NOT NULL DEFAULT 0 CHECK (checks >= 0);
UPDATE payment_requests SET next_check_at = requested_at WHERE status <> 'paid';
CREATE INDEX payment_requests_to_check ON payment_requests (next_check_at)
    WHERE status <> 'paid';

-- How each notice came: its webhook, or the sweep's question (a notice the sweep found is a
-- webhook that never arrived).
ALTER TABLE provider_events ADD COLUMN learnt_by text CHECK (learnt_by IN ('webhook', 'sweep'));
