-- No amount loket records is negative: the ingress refuses one, and a
-- provider's amount that is not a whole, non-negative rupiah value is never
-- parsed into one. The database holds the line too, so a bug that computed a
-- negative amount fails its write instead of reaching a provider as "-5.00"
-- or a finance export.
--
-- NOT VALID: added without reading the table, so it holds its lock only for
-- a moment. The next migration checks the existing rows without blocking
-- writes.
ALTER TABLE transactions
    ADD CONSTRAINT transactions_amount_not_negative
        CHECK (amount_minor IS NULL OR amount_minor >= 0) NOT VALID,
    ADD CONSTRAINT transactions_provider_amount_not_negative
        CHECK (provider_amount_minor IS NULL OR provider_amount_minor >= 0) NOT VALID;
