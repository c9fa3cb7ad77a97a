-- postbox 0002: autovacuum by count on the tables that churn.
--
-- Every message is inserted, updated by its claim and deleted by its ack, so messages collects
-- dead rows as fast as it handles messages. Autovacuum's default trigger is 20% of the table's
-- estimated rows: after a backlog of a million, it waited for some 200,000 dead rows, and the
-- heap grew by about 18 MB a minute at 2,000 msg/s before the first vacuum (npm run bench,
-- churn). Vacuuming after a fixed number of dead rows keeps the table and its indexes near the
-- size of the live backlog, and keeps the claim from walking over dead index entries.
ALTER TABLE {{schema}}.messages SET (
  autovacuum_vacuum_scale_factor = 0,
  autovacuum_vacuum_threshold = 5000,
  autovacuum_vacuum_insert_scale_factor = 0,
  autovacuum_vacuum_insert_threshold = 20000,
  autovacuum_analyze_scale_factor = 0.02,
  autovacuum_vacuum_cost_delay = 1
);

ALTER TABLE {{schema}}.waiters SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 500);
