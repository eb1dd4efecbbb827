-- The OpenMetadata identity a client's client-credentials tokens assert:
-- `sub` and `preferred_username` (token_subject) and `email` (token_email).
-- Empty: `sub` is the client id and no email is set, as before.
ALTER TABLE clients ADD COLUMN token_subject TEXT NOT NULL DEFAULT '';
ALTER TABLE clients ADD COLUMN token_email TEXT NOT NULL DEFAULT '';
