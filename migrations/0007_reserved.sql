-- postbox 0007: reserved. Another branch adds the real 0007; this file only keeps the versions
-- contiguous on the streams branch, so that 0008_streams.sql can be applied and tested here.
-- Drop it when merging that branch's 0007 (or renumber 0008_streams.sql to 0007).
SELECT 1;
