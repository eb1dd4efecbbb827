-- Each replica keeps its clients and their sealed secrets in memory. Every
-- client change bumps clients_generation and records, per client id, the
-- generation of its latest change (deletions included), so a replica whose
-- view is at generation G reads just the clients changed after G.
ALTER TABLE keyward_state ADD COLUMN clients_generation BIGINT NOT NULL DEFAULT 0;
CREATE TABLE client_changes (
    client_id TEXT PRIMARY KEY,
    generation BIGINT NOT NULL
);
CREATE INDEX client_changes_generation ON client_changes (generation);
