-- Leave room in each page of `transactions` so updates that change no
-- indexed column (the ingress's dispatched_at, the scheduler's check_count)
-- can be HOT updates that skip index maintenance.
ALTER TABLE transactions SET (fillfactor = 80);
