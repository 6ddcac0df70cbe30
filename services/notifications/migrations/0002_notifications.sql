-- The contact directory (連絡先), by the pseudonymous applicant id events carry.
CREATE TABLE contacts (
    applicant_id uuid PRIMARY KEY,
    email        text NOT NULL,
    phone        text,
    language     text NOT NULL DEFAULT 'ja' CHECK (language IN ('ja', 'en')),
    opt_outs     text[] NOT NULL DEFAULT '{}',
    updated_at   timestamptz NOT NULL DEFAULT now()
);

-- Which applicant an application belongs to, learnt from events that carry both ids, so that
-- events carrying only the application id (PaymentCaptured) can reach the applicant.
CREATE TABLE application_applicants (
    application_id uuid PRIMARY KEY,
    applicant_id   uuid NOT NULL,
    seen_at        timestamptz NOT NULL DEFAULT now()
);

-- One row per notification: unique per (cause event, rule, recipient), written in the
-- consumer's inbox transaction. pending -> sent | failed -> (retried) -> sent | dead.
CREATE TABLE notifications (
    id                  uuid PRIMARY KEY,
    cause_event_id      text NOT NULL,
    rule                text NOT NULL,
    recipient_key       text NOT NULL,
    recipient_kind      text NOT NULL,
    channel             text NOT NULL CHECK (channel IN ('email', 'webhook')),
    address             text NOT NULL,
    language            text NOT NULL,
    template            text NOT NULL,
    template_version    integer NOT NULL,
    subject             text NOT NULL,
    body_text           text NOT NULL,
    body_html           text NOT NULL,
    status              text NOT NULL DEFAULT 'pending'
                        CHECK (status IN ('pending', 'sent', 'failed', 'dead')),
    attempts            integer NOT NULL DEFAULT 0,
    next_attempt_at     timestamptz NOT NULL DEFAULT now(),
    last_error          text,
    provider_message_id text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    finished_at         timestamptz,
    UNIQUE (cause_event_id, rule, recipient_key)
);
CREATE INDEX notifications_due ON notifications (next_attempt_at)
    WHERE status IN ('pending', 'failed');
CREATE INDEX notifications_trouble ON notifications (updated_at DESC)
    WHERE status IN ('failed', 'dead');
CREATE INDEX notifications_finished ON notifications (finished_at)
    WHERE finished_at IS NOT NULL;

-- Saved template versions (shipped templates are version 0, read from files).
CREATE TABLE template_versions (
    name       text NOT NULL,
    language   text NOT NULL CHECK (language IN ('ja', 'en')),
    version    integer NOT NULL CHECK (version > 0),
    subject    text NOT NULL,
    body_text  text NOT NULL,
    body_html  text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (name, language, version)
);

-- What the DLQ watch last reported, so operators hear of growth once, not every check.
CREATE TABLE dlq_watch (
    stream        text PRIMARY KEY,
    reported_count bigint NOT NULL,
    reported_at   timestamptz NOT NULL DEFAULT now()
);
