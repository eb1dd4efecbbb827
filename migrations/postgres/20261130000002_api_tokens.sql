-- Named API tokens with a role and a scope. admin_tokens keeps every token
-- (its id is the token's name; 'bootstrap' is the first admin token), still
-- only as a hash. Scopes are JSON arrays of name patterns.
ALTER TABLE admin_tokens ADD COLUMN keysets TEXT NOT NULL DEFAULT '[]';
ALTER TABLE admin_tokens ADD COLUMN clients TEXT NOT NULL DEFAULT '[]';
ALTER TABLE admin_tokens ADD COLUMN description TEXT NOT NULL DEFAULT '';
ALTER TABLE admin_tokens ADD COLUMN expires_at BIGINT;
ALTER TABLE admin_tokens ADD COLUMN revoked_at BIGINT;
-- Bumped by every token change, so each replica reloads its in-memory token
-- view when it moves (polled with the JWKS generation).
ALTER TABLE keyward_state ADD COLUMN tokens_generation BIGINT NOT NULL DEFAULT 0;
