-- Controls that hold for one reference only (`control_for`; NULL: for every reference, as
-- fingerprints marked by an admin are), and the built-in ones the service makes itself for
-- a fetched reference (`builtin_control`: which one), replaced when a scan needs answers
-- they lack.
ALTER TABLE fingerprints ADD COLUMN control_for uuid REFERENCES models (id) ON DELETE CASCADE;
ALTER TABLE fingerprints ADD COLUMN builtin_control text;
CREATE UNIQUE INDEX fingerprints_builtin_control
    ON fingerprints (probe_set_id, control_for, builtin_control)
    WHERE builtin_control IS NOT NULL;
