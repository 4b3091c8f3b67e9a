-- A send_intents record is also closed to sending by the reconciler, in the
-- database transaction that fails the transaction for "no record at the
-- provider" (and created closed when no send was ever recorded): otherwise a
-- command redelivered while that failure was written could send the request
-- again after the client was told it failed. The column keeps its name.
COMMENT ON COLUMN send_intents.refused_at IS
    'When sending this transaction''s request became forbidden for good: the provider definitely refused a send of it (connector), or loket failed it for no record at the provider (reconciler).';
