-- The trace context of the request that wrote the event (W3C `traceparent` / `tracestate`, as a
-- JSON object), so the relay can carry it in the NATS headers and consumers continue the trace.
ALTER TABLE outbox ADD COLUMN trace_context text;
