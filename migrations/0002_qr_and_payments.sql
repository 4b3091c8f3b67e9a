-- SNAP QR CPM and Smilepayz: linked cancels/refunds, pay-in instructions,
-- methods and provider-specific request details.

ALTER TABLE transactions
    -- Cancels and refunds: the payment they act on.
    ADD COLUMN original_id UUID REFERENCES transactions(id),
    -- Pay-in / pay-out method (QRIS, BCA, W_DANA, ...).
    ADD COLUMN method TEXT NOT NULL DEFAULT '',
    -- Non-secret request parameters a connector needs (qr_content, payer,
    -- receiver, purpose, expiry, reason): the Command's `details`.
    ADD COLUMN details JSONB,
    -- Pay-ins: QR string / VA number / payment URL and expiry.
    ADD COLUMN payment JSONB;

CREATE INDEX transactions_original ON transactions (original_id) WHERE original_id IS NOT NULL;

ALTER TABLE products DROP CONSTRAINT products_kind_check;
ALTER TABLE products ADD CONSTRAINT products_kind_check
    CHECK (kind IN ('prepaid', 'pln_prepaid', 'postpaid', 'qr_cpm', 'pay_in', 'pay_out'));
