-- Team members (SQLite): admin users with a role per property. Same tables, columns and keys as
-- migrations/postgres/0014_members.sql.
--
-- A member logs in to the dashboard with a name and a password (scrypt, web/auth.py). A role
-- is granted per property: owner (everything: members, connections, keys, settings), editor
-- (connections, replay, routes, test orders) or viewer (reads figures only). A grant whose
-- property_id is NULL is host-wide: that role on every property, present and future.
--
-- property_id has no foreign key yet: the properties table is created by another migration
-- (properties: property 1 = 'default'); a later migration can add
-- REFERENCES properties (id) once both are in. Until then the code accepts property 1 only
-- (members.resolve_property).
--
-- The member of an existing install: the admin password set before this migration becomes
-- the member 'admin' with a host-wide owner grant, and the old setting is deleted (kept, a
-- downgrade would bring back a password that may have been changed since). Sessions started
-- with that password belong to 'admin' and keep working. Existing admin API keys become host
-- owners (api_keys.role); a key of another scope has no role.

CREATE TABLE members (
    id            INTEGER PRIMARY KEY,
    name          TEXT    NOT NULL UNIQUE,
    password_hash TEXT    NOT NULL,                   -- scrypt$n$r$p$salt$key; '' once removed
    created_at    REAL    NOT NULL,
    disabled_at   REAL                                -- set by `member remove`: cannot log in
);

-- One row per (member, property); the store replaces a member's grant on a property in one
-- transaction (NULL property ids are not equal to each other in a UNIQUE constraint).
CREATE TABLE member_roles (
    id          INTEGER PRIMARY KEY,
    member_id   INTEGER NOT NULL REFERENCES members (id),
    property_id INTEGER,                              -- NULL: every property (host-wide)
    role        TEXT    NOT NULL,                     -- owner | editor | viewer
    UNIQUE (member_id, property_id)
);

-- Whose session it is (NULL: nobody's; such a session no longer authenticates).
ALTER TABLE admin_sessions ADD COLUMN member_id INTEGER REFERENCES members (id);

-- An admin API key's role (NULL for ingest and collect keys, which reach no admin page).
ALTER TABLE api_keys ADD COLUMN role TEXT;

INSERT INTO members (name, password_hash, created_at)
    SELECT 'admin', value, updated_at FROM admin_settings WHERE name = 'password_hash';
INSERT INTO member_roles (member_id, property_id, role)
    SELECT id, NULL, 'owner' FROM members WHERE name = 'admin';
UPDATE admin_sessions SET member_id = (SELECT id FROM members WHERE name = 'admin');
DELETE FROM admin_settings WHERE name = 'password_hash';
UPDATE api_keys SET role = 'owner' WHERE scope = 'admin';
