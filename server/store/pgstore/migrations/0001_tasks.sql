-- Tasks as the API shows them (body, the same JSON the bbolt store keeps),
-- plus the fields that lists filter on as columns of their own. version is
-- the one the conditional writes compare; body carries the same number.
-- id is compared byte-wise (COLLATE "C") so that id order is creation
-- order whatever the database's locale, as the list cursor requires.
CREATE TABLE medops_tasks (
    id       text COLLATE "C" PRIMARY KEY,
    version  bigint NOT NULL CHECK (version > 0),
    status   text   NOT NULL,
    priority text   NOT NULL,
    assignee text   NOT NULL,
    labels   text[] NOT NULL,
    body     json   NOT NULL
);

CREATE INDEX medops_tasks_status ON medops_tasks (status, id);
CREATE INDEX medops_tasks_assignee ON medops_tasks (assignee, id);
CREATE INDEX medops_tasks_labels ON medops_tasks USING gin (labels);
