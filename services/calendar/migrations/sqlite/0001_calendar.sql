-- Calendars and events keep their versions in kit's bitemporal tables (entities 'calendar' and
-- 'event'). This migration adds the indexes their lookups need (see the PostgreSQL migration
-- for the reasons). SQLite's `->>` reads a JSON true as the integer 1.

CREATE INDEX events_by_calendar_start ON entity_heads (tenant_id, doc->>'calendar_id', doc->>'span_start')
    WHERE entity = 'event' AND deleted_at IS NULL;
CREATE INDEX events_by_start ON entity_heads (tenant_id, doc->>'span_start')
    WHERE entity = 'event' AND deleted_at IS NULL;
CREATE INDEX events_by_series ON entity_heads (tenant_id, doc->>'series_id')
    WHERE entity = 'event' AND deleted_at IS NULL AND doc->>'series_id' IS NOT NULL;
CREATE INDEX events_by_next_occurrence ON entity_heads (tenant_id, doc->>'next_occurrence')
    WHERE entity = 'event' AND deleted_at IS NULL AND doc->>'next_occurrence' IS NOT NULL;
CREATE UNIQUE INDEX calendars_one_primary ON entity_heads (tenant_id)
    WHERE entity = 'calendar' AND deleted_at IS NULL AND doc->>'is_primary' = 1;
CREATE INDEX attendees_by_event ON entity_heads (tenant_id, doc->>'event_id', created_at)
    WHERE entity = 'attendee' AND deleted_at IS NULL;
