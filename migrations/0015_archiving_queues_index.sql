-- postbox 0015: an ack finds the queues that keep acked messages through an index.
--
-- ack() (0007, restated in 0011) starts by asking which queues have a retention period, to decide
-- once per call whether any acked message goes to messages_archive. Without an index that is a
-- sequential scan of every queue (and dead letter) at every ack call, small claims included: the
-- wake path's claim + ack read about 375 queue rows per message in the bench's database
-- (bench/diagnose/claim-sql.ts under callgrind). Measured on PostgreSQL 15 with 400 queues and
-- their 400 dead letters, none archiving: 0.155 ms for the scan, 0.004 ms through this partial
-- index, which holds only the queues that archive (usually none), so it costs nothing to keep.
CREATE INDEX queues_archiving ON {{schema}}.queues (name) WHERE retention IS NOT NULL;
