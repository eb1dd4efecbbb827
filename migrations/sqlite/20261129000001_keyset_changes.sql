-- The generation at which each key set last changed (its keys, policy or
-- deletion), so a JWKS refresh reads only the key sets changed since the
-- generation it has. 0 for rows older than this column: start-up reads all.
ALTER TABLE keysets ADD COLUMN changed_generation INTEGER NOT NULL DEFAULT 0;
CREATE INDEX keysets_changed ON keysets (changed_generation);
