-- Inserting an audit event moves the chain's head to it, in the same
-- statement: an append is then one INSERT, its own transaction, conditional on
-- the head it expects (see SqliteStore::append_audit_events). PostgreSQL moves
-- the head in the append's own statement instead and has no such trigger.
CREATE TRIGGER audit_events_move_head AFTER INSERT ON audit_events
BEGIN
    UPDATE audit_chain SET head_id = NEW.id, head_hash = NEW.hash WHERE id = 1;
END;
