-- The outbox's UNIQUE (event_id) goes (issue 7, docs/benchmarks.md). Its index took a random
-- uuid per event twice: at the INSERT, and again when the relay marks the row published (that
-- UPDATE changes an indexed column's predicate, so it is never a HOT update and every index
-- gets a new entry). Nothing looks rows up by event id; the relay and the reconciler go by seq.
-- Event ids are uuid4s minted once per event (Envelope.new), and a copy could do no harm
-- anyway: JetStream drops a second Nats-Msg-Id inside its window and consumers' inboxes
-- (or their own keys) drop it after.
ALTER TABLE outbox DROP CONSTRAINT outbox_event_id_key;
