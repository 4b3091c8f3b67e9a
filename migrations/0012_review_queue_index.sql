-- `loketctl review list` reads the transactions parked in needs_review, the
-- longest waiting first. Without this index it read the whole table. Only
-- parked rows have an entry, so the index stays small and a purchase's insert
-- or update adds nothing to it (those updates change `status`, which the other
-- partial indexes already name, so none of them was a HOT update before either).
--
-- Building it blocks writes to `transactions` for as long as it takes. On a
-- large production database, build it first by hand without blocking
-- (`CREATE INDEX CONCURRENTLY` with this name); this migration then finds it
-- and does nothing.
CREATE INDEX IF NOT EXISTS transactions_in_review ON transactions (updated_at, id)
    WHERE status = 'needs_review';
