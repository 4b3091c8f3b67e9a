-- The reconciler deletes send records and applied-event claims past their
-- retention (scheduler step 5); these indexes find the oldest rows without
-- scanning the tables. Both columns only grow, so each insert lands on the
-- rightmost leaf. The release before this one ignores them.
CREATE INDEX send_intents_recorded_at ON send_intents (recorded_at);
CREATE INDEX applied_events_applied_at ON applied_events (applied_at);
