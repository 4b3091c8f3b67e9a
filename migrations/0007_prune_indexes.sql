-- The reconciler deletes send records and applied-event claims past their
-- retention (scheduler step 5); these indexes find the oldest rows without
-- scanning the tables. Both columns only grow, so each insert lands on the
-- rightmost leaf. The release before this one ignores them.
--
-- Building them blocks writes to the two tables for as long as it takes. On a
-- large production database, build them first by hand without blocking
-- (`CREATE INDEX CONCURRENTLY` with these names); this migration then finds
-- them and does nothing.
CREATE INDEX IF NOT EXISTS send_intents_recorded_at ON send_intents (recorded_at);
CREATE INDEX IF NOT EXISTS applied_events_applied_at ON applied_events (applied_at);
