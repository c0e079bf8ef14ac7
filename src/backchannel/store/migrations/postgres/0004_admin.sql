-- Admin access (PostgreSQL): the same tables as migrations/sqlite/0004_admin.sql.
-- The password is stored as an scrypt hash (see web/auth.py), never in plaintext. A session
-- row is keyed by the SHA-256 of the random token held in the browser's cookie, so a copy of
-- this database does not yield a usable session; deleting the rows logs everyone out at once.

CREATE TABLE admin_settings (
    name        TEXT             PRIMARY KEY,         -- e.g. 'password_hash'
    value       TEXT             NOT NULL,
    updated_at  DOUBLE PRECISION NOT NULL
);

CREATE TABLE admin_sessions (
    token_hash  TEXT             PRIMARY KEY,         -- sha256 of the cookie's token
    csrf_token  TEXT             NOT NULL,            -- synchronizer token of this session
    created_at  DOUBLE PRECISION NOT NULL,
    expires_at  DOUBLE PRECISION NOT NULL
);
CREATE INDEX admin_sessions_expires ON admin_sessions (expires_at);
