-- Events about an application whose applicant is not known yet: across streams there is no
-- order, so PaymentCaptured (payments) may arrive before the event that names the applicant
-- (applications). They wait here and are notified when the applicant becomes known.
CREATE TABLE awaiting_applicant (
    cause_event_id text PRIMARY KEY,
    application_id uuid NOT NULL,
    ce_type        text NOT NULL,
    event_time     timestamptz NOT NULL,
    payload        text NOT NULL,
    parked_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX awaiting_applicant_application ON awaiting_applicant (application_id);
CREATE INDEX awaiting_applicant_parked_at ON awaiting_applicant (parked_at);
