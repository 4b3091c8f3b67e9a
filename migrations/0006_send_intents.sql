-- The money-moving request of a transaction, recorded by the connector
-- before it is sent (money-safety rule 2: never send twice). A connector
-- decides "send" or "ask the provider first" from this table, not from
-- JetStream's delivery count alone: nats-server writes its consumers' state
-- (delivered, acked) lazily, so after it restarts a command that was sent,
-- even answered and applied, can come back as a first delivery (seen in the
-- RELIABILITY #6 test). A transaction has one money-moving operation, so its
-- id is the key. Old builds do not read the table.
CREATE TABLE send_intents (
    transaction_id UUID PRIMARY KEY,
    recorded_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);
