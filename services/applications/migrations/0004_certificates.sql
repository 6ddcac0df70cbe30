-- 証明書: the issued document, its number and the hash of its verification code (the code itself
-- is printed on the PDF only).
CREATE TABLE certificates (
    number                 text PRIMARY KEY,
    application_id         uuid NOT NULL UNIQUE REFERENCES applications (id),
    procedure_code         text NOT NULL,
    procedure_name         text NOT NULL,
    issued_at              timestamptz NOT NULL,
    verification_code_hash text NOT NULL,
    pdf                    bytea NOT NULL
);
