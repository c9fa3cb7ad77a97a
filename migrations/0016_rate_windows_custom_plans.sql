-- postbox 0016: rate_windows_record plans its statements for the rows it is given, every call.
--
-- 0014 made rate_windows_record PL/pgSQL, whose plans a connection keeps: after five calls a
-- statement may switch to a generic plan, made without knowing how many rows the arrays carry.
-- A queue's own rate window passes one row per shard; a per-key window passes a row per key of
-- the claim (a hundred). Whichever kind a pooled connection met first chose the plan for both:
-- after claims of a rateLimit queue, the claims of a keyRateLimit queue spent 163 ms a call in
-- the function's first UPDATE where they spent 10.5 ms without that history
-- (bench/diagnose/flow-statements.ts PRIME=rateLimit, pg_stat_statements; 4,511 against 17,417
-- claimed messages a second), which is what `npm run bench -- --only flow` measured on
-- PostgreSQL 18 (keyRateLimit at 0.09-0.12x of no limits there, 0.40x on 15, whose choice of plan
-- happened to differ). Planned for its arguments at every call, the primed run claimed 13,890 a
-- second; planning the statements costs each call a few tenths of a millisecond.
ALTER FUNCTION {{schema}}.rate_windows_record(text, text[], integer[], integer[], integer[], interval, timestamptz)
  SET plan_cache_mode = force_custom_plan;
