-- Online confirmations (issue 19): money the provider took is always recorded.
--
-- 1. Each provider notice keeps its outcome, so the same notice again is answered with it and
--    changes nothing. Notices accepted before this migration settled their request.
ALTER TABLE provider_events
    ADD COLUMN amount_yen bigint,
    ADD COLUMN payment_id uuid,
    ADD COLUMN outcome text CHECK (outcome IN ('captured', 'needs_attention'));
UPDATE provider_events e
   SET payment_id = r.payment_id, amount_yen = r.amount_yen, outcome = 'captured'
  FROM payment_requests r
 WHERE r.reference = e.reference AND r.status = 'paid';

-- 2. The staff queue (要確認入金): an online payment captured although it settles nothing by
--    itself (paid after expiry, paid twice, another amount), until staff refund it in full or
--    attach it to its application; every action with who took it and when.
CREATE TABLE payment_attention (
    payment_id    uuid PRIMARY KEY REFERENCES payments (payment_id),
    request_id    uuid NOT NULL REFERENCES payment_requests (request_id),
    reasons       text[] NOT NULL CHECK (cardinality(reasons) > 0),
    requested_yen bigint NOT NULL CHECK (requested_yen > 0),
    received_at   timestamptz NOT NULL,
    learnt_by     text NOT NULL CHECK (learnt_by IN ('webhook', 'sweep')),
    status        text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'decided')),
    resolution    text CHECK (resolution IN ('refunded', 'attached')),
    decided_by    text,
    decided_at    timestamptz,
    CHECK ((status = 'decided') = (resolution IS NOT NULL)),
    CHECK ((status = 'decided') = (decided_by IS NOT NULL AND decided_at IS NOT NULL))
);
CREATE INDEX payment_attention_by_status ON payment_attention (status, received_at);

CREATE TABLE payment_attention_actions (
    payment_id      uuid NOT NULL REFERENCES payment_attention (payment_id),
    idempotency_key text NOT NULL,
    action          text NOT NULL CHECK (action IN ('refund', 'attach')),
    amount_yen      bigint CHECK (amount_yen > 0),
    refund_id       uuid REFERENCES refunds (refund_id),
    staff_id        text NOT NULL,
    acted_at        timestamptz NOT NULL,
    PRIMARY KEY (payment_id, idempotency_key),
    CHECK ((action = 'refund') = (amount_yen IS NOT NULL AND refund_id IS NOT NULL))
);
