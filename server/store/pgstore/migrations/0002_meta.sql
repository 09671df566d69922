-- What the store knows about itself rather than tasks: the marker of the
-- last restore (key 'restore'), written in the same transaction as the
-- tasks it imported, so a restore that ran is never run twice.
CREATE TABLE medops_meta (
    key   text PRIMARY KEY,
    value text NOT NULL
);
