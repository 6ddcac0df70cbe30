-- Online usage rate, first cut: applications counted by channel.
CREATE TABLE applications_by_channel (
    channel    text PRIMARY KEY,
    count      bigint NOT NULL DEFAULT 0 CHECK (count >= 0),
    updated_at timestamptz NOT NULL DEFAULT now()
);
