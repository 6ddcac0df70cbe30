-- A terminal's NATS identity is an nkey: the server knows its public key, the terminal alone
-- holds the seed (its credential file). Each key ever issued is kept with who issued it and,
-- once rotated or revoked, when and by whom: the record of who could publish as the terminal.
CREATE TABLE terminal_keys (
    public_key  text PRIMARY KEY CHECK (public_key ~ '^U[A-Z2-7]{55}$'),
    terminal_id text NOT NULL REFERENCES terminals (terminal_id),
    issued_at   timestamptz NOT NULL DEFAULT now(),
    issued_by   text NOT NULL,
    revoked_at  timestamptz,
    revoked_by  text,
    reason      text,
    CHECK ((revoked_at IS NULL) = (revoked_by IS NULL))
);

-- One key in force per terminal at a time.
CREATE UNIQUE INDEX terminal_keys_in_force ON terminal_keys (terminal_id) WHERE revoked_at IS NULL;
