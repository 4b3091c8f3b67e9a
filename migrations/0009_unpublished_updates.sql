-- Updates the scheduler committed but has not yet seen on the update stream.
--
-- The scheduler's own transitions (an inquiry expired, a transaction parked
-- in needs_review) come from no event, so no redelivery would publish them
-- again: a crash, or a JetStream outage longer than the publish retries,
-- between the commit and the publish lost the update for every Watch
-- stream. Each such transition now writes a row here in its own
-- transaction; the publish that follows the commit deletes it, and a later
-- tick publishes whatever is left (the message id `upd:<id>:<tag>` lets the
-- stream drop a copy it already has).
CREATE TABLE unpublished_updates (
    transaction_id UUID NOT NULL,
    tag TEXT NOT NULL,
    recorded_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (transaction_id, tag)
);
CREATE INDEX unpublished_updates_by_age ON unpublished_updates (recorded_at);
