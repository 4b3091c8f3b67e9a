-- The reconciler's tick steps read only the rows they may act on. Every step
-- read `transactions_unresolved_created`, which holds every received, pending
-- and unknown transaction: with a backlog of long-lived pending ones (QR
-- payments and pay-in orders live for up to a day, OkeBayar's checks go
-- hourly) each tick read them all, on every replica, to find the few
-- received ones, inquiries or never-sent transactions it wanted.
--
-- The unresolved index now leads with the status, so the received ones are
-- one range of it; it replaces the old one, so an insert maintains as many
-- entries as before. Open inquiries and transactions the provider has no
-- record of get small indexes of their own: a purchase's insert or update
-- adds nothing to either.
--
-- Building them blocks writes to `transactions` for as long as it takes. On a
-- large production database, build them first by hand without blocking
-- (`CREATE INDEX CONCURRENTLY` with these names); this migration then finds
-- them and only drops the old index.
CREATE INDEX IF NOT EXISTS transactions_unresolved_by_status ON transactions (status, created_at)
    WHERE status IN ('received', 'pending', 'unknown');
DROP INDEX IF EXISTS transactions_unresolved_created;
CREATE INDEX IF NOT EXISTS transactions_open_inquiries ON transactions (created_at)
    WHERE kind IN ('prepaid_inquiry', 'bill_inquiry') AND status IN ('received', 'pending', 'unknown');
CREATE INDEX IF NOT EXISTS transactions_not_found ON transactions (created_at)
    WHERE status = 'unknown' AND not_found_since IS NOT NULL;
