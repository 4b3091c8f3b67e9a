-- Checks the rows written before 0010 against its constraints. In a migration
-- of its own, so it runs in a transaction of its own: VALIDATE takes a lock
-- that lets reads and writes go on while it reads the table.
ALTER TABLE transactions VALIDATE CONSTRAINT transactions_amount_not_negative;
ALTER TABLE transactions VALIDATE CONSTRAINT transactions_provider_amount_not_negative;
