-- Group-2 signatures bind a server-issued challenge (チャレンジ): single use, a few minutes' life,
-- issued to one applicant account. A submission takes its challenge's row (FOR UPDATE) and marks
-- it used in the transaction that inserts the application, so two requests carrying the same
-- signature cannot both be accepted. Rows are removed a day after they expire.
CREATE TABLE identity_challenges (
    challenge      text PRIMARY KEY,
    applicant_id   uuid NOT NULL,
    issued_at      timestamptz NOT NULL,
    expires_at     timestamptz NOT NULL,
    used_at        timestamptz,
    application_id uuid REFERENCES applications (id),
    CHECK ((used_at IS NULL) = (application_id IS NULL))
);
CREATE INDEX identity_challenges_expires_at ON identity_challenges (expires_at);
