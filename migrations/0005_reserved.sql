-- postbox 0005: reserved. The correctness branch adds the real 0005 (per-group receive, ack,
-- create_queue); this file only keeps the versions contiguous on the topics branch, so that
-- 0006_topics.sql can be applied and tested here. Drop it when merging that branch's 0005.
SELECT 1;
