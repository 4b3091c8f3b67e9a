-- The event log and the stored provider exchanges are append-only and
-- written only by loket itself, in the same database transaction that
-- created or locked the transaction row they belong to (rows are never
-- deleted). A foreign key there re-checked what that code already holds, at
-- the price of one lookup and row lock per appended row; the reads still go
-- through the (transaction_id, id) indexes.
ALTER TABLE transaction_events DROP CONSTRAINT transaction_events_transaction_id_fkey;
ALTER TABLE provider_exchanges DROP CONSTRAINT provider_exchanges_transaction_id_fkey;
