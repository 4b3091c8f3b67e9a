//! How many `WatchTransactions` streams each client may hold open at once.
//! Every open watch costs a NATS subscription and a task for as long as the
//! client keeps it, so one client opening them in a loop (a bug that forgets
//! to close them, or a retry storm) would otherwise grow the ingress and
//! nats-server without bound. Past the limit a new watch is refused with
//! `RESOURCE_EXHAUSTED` naming the limit; closing one frees its slot. The
//! slots also keep the open-watch gauge (`loket_ingress_watch_streams`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use uuid::Uuid;

use crate::auth::ClientId;
use crate::errors::ApiError;

/// The open watch streams per client.
#[derive(Debug)]
pub struct WatchSlots {
    max_per_client: usize,
    open: Arc<Mutex<HashMap<Uuid, usize>>>,
}

/// One open watch stream; its slot is freed when this is dropped.
#[derive(Debug)]
pub struct WatchSlot {
    client: Uuid,
    open: Arc<Mutex<HashMap<Uuid, usize>>>,
}

impl WatchSlots {
    pub fn new(max_per_client: usize) -> Self {
        WatchSlots {
            max_per_client,
            open: Arc::default(),
        }
    }

    /// A slot for one more watch of `client`, or `RESOURCE_EXHAUSTED` when it
    /// holds the most it may.
    pub fn take(&self, client: ClientId) -> Result<WatchSlot, ApiError> {
        let mut open = lock(&self.open);
        let count = open.entry(client.0).or_default();
        if *count >= self.max_per_client {
            return Err(ApiError::ResourceExhausted(format!(
                "this client already has {} watch streams open, the most it may \
                 (max_watches_per_client); close one, or watch all its transactions in one stream",
                self.max_per_client
            )));
        }
        *count += 1;
        metrics::gauge!(crate::metrics::WATCH_STREAMS).increment(1.0);
        Ok(WatchSlot {
            client: client.0,
            open: Arc::clone(&self.open),
        })
    }
}

impl Drop for WatchSlot {
    fn drop(&mut self) {
        metrics::gauge!(crate::metrics::WATCH_STREAMS).decrement(1.0);
        let mut open = lock(&self.open);
        if let Some(count) = open.get_mut(&self.client) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.client);
            }
        }
    }
}

/// The map, even after a panic elsewhere held its lock: it holds only counts.
fn lock(open: &Mutex<HashMap<Uuid, usize>>) -> std::sync::MutexGuard<'_, HashMap<Uuid, usize>> {
    open.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn each_client_has_its_own_limit_and_a_closed_watch_frees_its_slot() {
        let slots = WatchSlots::new(2);
        let (a, b) = (ClientId(Uuid::new_v4()), ClientId(Uuid::new_v4()));
        let first = slots.take(a).unwrap();
        let _second = slots.take(a).unwrap();
        let refused = slots.take(a).unwrap_err();
        assert_eq!(refused.code(), Code::ResourceExhausted);
        assert!(
            refused
                .to_string()
                .contains("already has 2 watch streams open"),
            "{refused}"
        );
        assert!(refused.to_string().contains("max_watches_per_client"));
        let _other = slots.take(b).expect("another client is not held back");
        drop(first);
        assert_eq!(lock(&slots.open).get(&a.0), Some(&1));
        let _again = slots.take(a).expect("the closed watch's slot is free");
        assert_eq!(lock(&slots.open).get(&a.0), Some(&2));
    }

    #[test]
    fn a_client_with_no_watch_left_is_forgotten() {
        let slots = WatchSlots::new(1);
        let a = ClientId(Uuid::new_v4());
        drop(slots.take(a).unwrap());
        assert!(lock(&slots.open).is_empty());
    }
}
