-- Calendars and events keep their versions in kit's bitemporal tables (entities 'calendar' and
-- 'event'). This migration adds the indexes their lookups need, each partial on its entity.
-- Moments in documents are fixed-width UTC text (`2025-01-01T09:00:00.000000Z`), so text order
-- is time order.

-- Events of a calendar, and window reads: an event (or a whole series) overlaps [from, to)
-- when it starts before `to` and its last end (`span_end`) is after `from`.
CREATE INDEX events_by_calendar_start ON entity_heads (tenant_id, (doc->>'calendar_id'), (doc->>'span_start'))
    WHERE entity = 'event' AND deleted_at IS NULL;
CREATE INDEX events_by_start ON entity_heads (tenant_id, (doc->>'span_start'))
    WHERE entity = 'event' AND deleted_at IS NULL;
-- A series' exceptions.
CREATE INDEX events_by_series ON entity_heads (tenant_id, (doc->>'series_id'))
    WHERE entity = 'event' AND deleted_at IS NULL AND doc->>'series_id' IS NOT NULL;
-- Recurring series by their next occurrence.
CREATE INDEX events_by_next_occurrence ON entity_heads (tenant_id, (doc->>'next_occurrence'))
    WHERE entity = 'event' AND deleted_at IS NULL AND doc->>'next_occurrence' IS NOT NULL;
-- One primary calendar per tenant: the second wall behind the service's own check.
CREATE UNIQUE INDEX calendars_one_primary ON entity_heads (tenant_id)
    WHERE entity = 'calendar' AND deleted_at IS NULL AND doc->>'is_primary' = 'true';
-- An event's attendees.
CREATE INDEX attendees_by_event ON entity_heads (tenant_id, (doc->>'event_id'), created_at)
    WHERE entity = 'attendee' AND deleted_at IS NULL;
