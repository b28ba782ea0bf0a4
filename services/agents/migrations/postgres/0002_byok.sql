-- The tenant's own Anthropic key per blueprint (BYOK), sealed by kit's envelope encryption
-- (purpose `agents.byok.<blueprint>`): only ciphertext is stored, with a masked hint. A config
-- row made by a key alone has an empty document (the blueprint's defaults).
ALTER TABLE agent_configs ADD COLUMN byok_sealed bytea;
ALTER TABLE agent_configs ADD COLUMN byok_hint text;
-- active, or auth_failed once a run found the key refused.
ALTER TABLE agent_configs ADD COLUMN byok_status text;
ALTER TABLE agent_configs ADD COLUMN byok_status_reason text;
ALTER TABLE agent_configs ADD COLUMN byok_probed_at timestamptz;
