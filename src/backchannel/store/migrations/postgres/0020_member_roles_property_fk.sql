-- A member's role on a property must name a property that exists (PostgreSQL). Same table as
-- migrations/sqlite/0020_member_roles_property_fk.sql: member_roles.property_id gains the
-- foreign key to properties that 0014 left out (NULL still means every property).
-- Why: a grant on an id no property has grants nothing today, but would grant the role on
-- whichever property is created with that id later. Neither the CLI nor the dashboard can
-- write such a grant (both resolve a property by name); one written some other way is
-- removed here, and each one removed is named in the audit log (actor "migration 0020").

INSERT INTO audit_log (at, actor, action, detail, property_id)
    SELECT EXTRACT(EPOCH FROM now()), 'migration 0020', 'member.role',
           m.name || ': ' || r.role || ' of #' || r.property_id
               || ' removed (no such property)',
           NULL
    FROM member_roles r JOIN members m ON m.id = r.member_id
    WHERE r.property_id IS NOT NULL
      AND r.property_id NOT IN (SELECT id FROM properties)
    ORDER BY r.id;
DELETE FROM member_roles
    WHERE property_id IS NOT NULL AND property_id NOT IN (SELECT id FROM properties);

ALTER TABLE member_roles
    ADD CONSTRAINT member_roles_property_id_fkey
    FOREIGN KEY (property_id) REFERENCES properties (id);
