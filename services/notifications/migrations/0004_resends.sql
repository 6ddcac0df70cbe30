-- Failures operators can act on: when a delivery was first and last tried, and a record of every
-- resend an operator asked for (who, when, to which address).
ALTER TABLE notifications ADD COLUMN first_attempt_at timestamptz;
ALTER TABLE notifications ADD COLUMN last_attempt_at timestamptz;
-- Rows tried before this migration: the best known times (created, last changed).
UPDATE notifications SET first_attempt_at = created_at, last_attempt_at = updated_at
    WHERE attempts > 0;

-- One row per resend (dead -> pending again, with a fresh set of retries). The address is the
-- one this resend went to (the contact's current one); previous_* is the delivery that failed.
CREATE TABLE notification_resends (
    id                uuid PRIMARY KEY,
    notification_id   uuid NOT NULL REFERENCES notifications (id) ON DELETE CASCADE,
    requested_by      text NOT NULL,
    requested_at      timestamptz NOT NULL DEFAULT now(),
    address           text NOT NULL,
    previous_address  text NOT NULL,
    previous_error    text,
    previous_attempts integer NOT NULL
);
CREATE INDEX notification_resends_notification ON notification_resends (notification_id,
                                                                        requested_at DESC);
