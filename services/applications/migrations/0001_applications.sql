CREATE TABLE applications (
    id             uuid PRIMARY KEY,
    procedure_code text NOT NULL,
    channel        text NOT NULL CHECK (channel IN ('online', 'counter', 'mail')),
    status         text NOT NULL,
    submitted_at   timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX applications_procedure ON applications (procedure_code, submitted_at);
