-- The W3C trace context (traceparent, tracestate) of the event that caused a notification: the
-- sender's hand-off to SMTP or a webhook is a span of that event's trace (docs/operations.md).
ALTER TABLE notifications ADD COLUMN trace_headers jsonb NOT NULL DEFAULT '{}';
