-- Leave room in each page of `transactions` so updates that change no
-- indexed column (the ingress's dispatched_at) can be HOT updates that skip
-- index maintenance.
ALTER TABLE transactions SET (fillfactor = 80);

-- The sweep's query (status = 'received', by created_at) is served by
-- transactions_unresolved_created, whose predicate covers it; one index less
-- to maintain on every insert.
DROP INDEX transactions_undispatched;
