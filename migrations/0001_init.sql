-- loket's record of truth. JetStream is transport; everything a client was
-- told, and every state change, is here.

CREATE TABLE clients (
    id            UUID PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    -- SHA-256 of the API key; the key itself is shown once and never stored.
    api_key_hash  BYTEA NOT NULL UNIQUE,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    disabled      BOOLEAN NOT NULL DEFAULT FALSE
);

-- The product catalogue: our product code -> provider + provider code + price.
CREATE TABLE products (
    code                   TEXT PRIMARY KEY,
    provider               TEXT NOT NULL,
    provider_product_code  TEXT NOT NULL,
    -- prepaid | pln_prepaid | postpaid
    kind                   TEXT NOT NULL CHECK (kind IN ('prepaid', 'pln_prepaid', 'postpaid')),
    -- Expected provider price for prepaid products (IDR); NULL for postpaid.
    price_minor            BIGINT CHECK (price_minor IS NULL OR price_minor >= 0),
    currency               TEXT NOT NULL DEFAULT 'IDR',
    description            TEXT NOT NULL DEFAULT '',
    active                 BOOLEAN NOT NULL DEFAULT TRUE,
    updated_at             TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE transactions (
    id                     UUID PRIMARY KEY,
    client_id              UUID NOT NULL REFERENCES clients(id),
    client_ref             TEXT NOT NULL,
    kind                   TEXT NOT NULL,
    status                 TEXT NOT NULL CHECK (status IN ('received', 'pending', 'unknown', 'success', 'failed', 'needs_review')),
    provider               TEXT NOT NULL,
    product_code           TEXT NOT NULL,
    provider_product_code  TEXT NOT NULL,
    account                TEXT NOT NULL,
    account2               TEXT NOT NULL DEFAULT '',
    account3               TEXT NOT NULL DEFAULT '',
    contact                TEXT NOT NULL DEFAULT '',
    amount_minor           BIGINT,
    currency               TEXT NOT NULL DEFAULT 'IDR',
    -- SHA-256 over the canonical request parameters, to tell a replay of the
    -- same request from a conflicting reuse of a client_ref.
    request_hash           BYTEA NOT NULL,
    -- Our reference on every provider call (OkeBayar referencecode).
    provider_reference     TEXT NOT NULL UNIQUE,
    provider_trace         TEXT,
    provider_code          TEXT,
    provider_message       TEXT,
    serial_number          TEXT,
    provider_amount_minor  BIGINT,
    amount_mismatch        BOOLEAN NOT NULL DEFAULT FALSE,
    -- Payments: the inquiry they pay.
    inquiry_id             UUID REFERENCES transactions(id),
    -- Inquiries: the bill (customer name, amounts, extra fields) and the
    -- values a payment must echo verbatim.
    bill                   JSONB,
    inquiry_data           JSONB,
    expires_at             TIMESTAMPTZ,
    -- Dispatch bookkeeping (the sweep re-dispatches what never got here).
    dispatched_at          TIMESTAMPTZ,
    dispatch_count         INT NOT NULL DEFAULT 0,
    -- Status-check schedule for pending/unknown transactions.
    next_check_at          TIMESTAMPTZ,
    check_count            INT NOT NULL DEFAULT 0,
    not_found_since        TIMESTAMPTZ,
    review_reason          TEXT,
    created_at             TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at             TIMESTAMPTZ NOT NULL DEFAULT now(),
    finalized_at           TIMESTAMPTZ,
    UNIQUE (client_id, client_ref)
);

CREATE INDEX transactions_client_created ON transactions (client_id, created_at DESC, id DESC);
CREATE INDEX transactions_due_checks ON transactions (next_check_at)
    WHERE status IN ('pending', 'unknown');
CREATE INDEX transactions_undispatched ON transactions (created_at)
    WHERE status = 'received';

-- Append-only event log per transaction.
CREATE TABLE transaction_events (
    id              BIGSERIAL PRIMARY KEY,
    transaction_id  UUID NOT NULL REFERENCES transactions(id),
    at              TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- ingress | result | callback | status_check | sweep | review
    source          TEXT NOT NULL,
    from_status     TEXT,
    to_status       TEXT,
    provider_code   TEXT,
    detail          JSONB NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX transaction_events_txn ON transaction_events (transaction_id, id);

-- Bus events already applied: the reconciler applies each exactly once.
CREATE TABLE applied_events (
    event_id        TEXT PRIMARY KEY,
    transaction_id  UUID,
    applied_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Provider exchanges, stored masked (no PIN, no signature, no secret).
CREATE TABLE provider_exchanges (
    id              BIGSERIAL PRIMARY KEY,
    transaction_id  UUID NOT NULL REFERENCES transactions(id),
    operation       TEXT NOT NULL,
    url             TEXT NOT NULL,
    request         TEXT NOT NULL,
    response        TEXT NOT NULL,
    http_status     INT,
    duration_ms     INT NOT NULL,
    error           TEXT,
    at              TIMESTAMPTZ NOT NULL
);
CREATE INDEX provider_exchanges_txn ON provider_exchanges (transaction_id, id);

-- At most one payment per inquiry that is not known to have failed (never
-- pay a bill twice).
CREATE UNIQUE INDEX one_live_payment_per_inquiry ON transactions (inquiry_id)
    WHERE kind = 'bill_payment' AND status <> 'failed';

-- The reconciler's limit queries (unresolved for too long).
CREATE INDEX transactions_unresolved_created ON transactions (created_at)
    WHERE status IN ('received', 'pending', 'unknown');
