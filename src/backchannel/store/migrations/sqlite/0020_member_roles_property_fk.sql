-- A member's role on a property must name a property that exists (SQLite). Same table as
-- migrations/postgres/0020_member_roles_property_fk.sql: member_roles.property_id gains the
-- foreign key to properties that 0014 left out (NULL still means every property).
-- Why: a grant on an id no property has grants nothing today, but would grant the role on
-- whichever property is created with that id later. Neither the CLI nor the dashboard can
-- write such a grant (both resolve a property by name); one written some other way is
-- removed here, and each one removed is named in the audit log (actor "migration 0020").
-- SQLite cannot add a foreign key in place: the table is rebuilt (copy, drop, rename),
-- keeping every id.
-- rebuilds: member_roles(id, member_id, property_id, role)

INSERT INTO audit_log (at, actor, action, detail, property_id)
    SELECT unixepoch(), 'migration 0020', 'member.role',
           m.name || ': ' || r.role || ' of #' || r.property_id
               || ' removed (no such property)',
           NULL
    FROM member_roles r JOIN members m ON m.id = r.member_id
    WHERE r.property_id IS NOT NULL
      AND r.property_id NOT IN (SELECT id FROM properties)
    ORDER BY r.id;
DELETE FROM member_roles
    WHERE property_id IS NOT NULL AND property_id NOT IN (SELECT id FROM properties);

CREATE TABLE member_roles_0020 (
    id          INTEGER PRIMARY KEY,
    member_id   INTEGER NOT NULL REFERENCES members (id),
    property_id INTEGER REFERENCES properties (id),   -- NULL: every property (host-wide)
    role        TEXT    NOT NULL,                     -- owner | editor | viewer
    UNIQUE (member_id, property_id)
);
INSERT INTO member_roles_0020 (id, member_id, property_id, role)
    SELECT id, member_id, property_id, role FROM member_roles;
DROP TABLE member_roles;
ALTER TABLE member_roles_0020 RENAME TO member_roles;
