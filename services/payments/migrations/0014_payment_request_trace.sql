-- The W3C trace context (traceparent, tracestate) of the application fee's request, kept with the
-- payment request: the provider's notice (webhook or sweep) knows nothing of our traces, so its
-- processing continues this one, and one application stays one trace (docs/operations.md).
ALTER TABLE payment_requests ADD COLUMN trace_headers jsonb NOT NULL DEFAULT '{}';
