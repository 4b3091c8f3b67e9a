-- When the provider definitely refused the transaction's money-moving request
-- (a failure by its code table). Such a refusal leaves no record at some
-- providers (Smilepayz creates no order, OkeBayar keeps none for 203), so a
-- redelivered command's status check would find "no record", and without
-- this mark the connector would send the request again before the reconciler
-- had applied the refusal: a pay-out refused for lack of balance, sent again
-- once the balance was topped up, while the client is told it failed. A
-- refused request is never sent again; the refusal's result decides.
ALTER TABLE send_intents ADD COLUMN refused_at TIMESTAMPTZ;
