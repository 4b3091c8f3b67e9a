-- The status a transaction had when it was parked in needs_review.
--
-- A bill payment loket reported failed frees its inquiry: the client may pay
-- it again. When a contradicting success for the failed payment arrives
-- later, it must still reach needs_review (and its alert) although the
-- second payment now holds the inquiry; before this, the unique index
-- refused that update and the event was retried forever. A payment parked
-- from `failed` therefore stays out of the one-live-payment guard, as it was
-- while failed; every other payment in review (unresolved, or a success
-- contradicted) still holds its inquiry.
ALTER TABLE transactions ADD COLUMN reviewed_from TEXT;

DROP INDEX one_live_payment_per_inquiry;
CREATE UNIQUE INDEX one_live_payment_per_inquiry ON transactions (inquiry_id)
    WHERE kind = 'bill_payment' AND status <> 'failed'
      AND NOT (status = 'needs_review' AND reviewed_from IS NOT DISTINCT FROM 'failed');
