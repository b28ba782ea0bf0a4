-- The tenant's own Anthropic key per blueprint (BYOK), sealed (see the PostgreSQL migration).
ALTER TABLE agent_configs ADD COLUMN byok_sealed BLOB;
ALTER TABLE agent_configs ADD COLUMN byok_hint TEXT;
ALTER TABLE agent_configs ADD COLUMN byok_status TEXT;
ALTER TABLE agent_configs ADD COLUMN byok_status_reason TEXT;
ALTER TABLE agent_configs ADD COLUMN byok_probed_at TEXT;
