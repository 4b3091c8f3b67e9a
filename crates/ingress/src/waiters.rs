//! Callers waiting for a transaction to settle (`wait_ms`).
//!
//! One core-NATS subscription on `loket.upd.>` per process feeds an
//! in-memory table of waiters keyed by transaction id, instead of one NATS
//! subscription per waiting call: at ~1,500 waited purchases/s that saves a
//! SUB/UNSUB pair per call and keeps the ingress's NATS interest constant.
//! An update's subject names its client and its `Loket-Transaction` header
//! its transaction, so messages for transactions nobody waits for are
//! dropped without decoding.
//!
//! The ordering rule that makes this race-free is the same as with a
//! per-call subscription: a caller [`Waiters::register`]s *before* it reads
//! (or inserts) the row, so an update published after that read is always
//! delivered to it.

use loket_protocol::{pb, subjects};
use prost::Message as _;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;
use tokio::time::Instant;
use uuid::Uuid;

struct Slot {
    client: Uuid,
    sender: watch::Sender<Option<pb::Transaction>>,
    waiters: usize,
}

#[derive(Default)]
pub struct Waiters {
    slots: Mutex<HashMap<Uuid, Slot>>,
}

/// Final, or parked for a human: a waiting caller returns.
pub fn is_settled(transaction: &pb::Transaction) -> bool {
    matches!(
        pb::TransactionStatus::try_from(transaction.status),
        Ok(pb::TransactionStatus::Success
            | pb::TransactionStatus::Failed
            | pb::TransactionStatus::NeedsReview)
    )
}

/// Whether a pay-in carries what the payer needs (a QR string, a VA number
/// or a payment page).
pub fn has_instructions(transaction: &pb::Transaction) -> bool {
    transaction.payment.as_ref().is_some_and(|payment| {
        !payment.qr_string.is_empty()
            || !payment.va_number.is_empty()
            || !payment.payment_url.is_empty()
    })
}

/// When a call with `wait_ms` returns: once the transaction settles — or,
/// for a pay-in, as soon as the connector reported the payment instructions
/// (a `pending` pay-in with instructions is what the caller waits for: the
/// payer cannot pay before getting them, and the final state may be an hour
/// away).
pub fn is_ready(transaction: &pb::Transaction) -> bool {
    is_settled(transaction)
        || (transaction.kind == pb::TransactionKind::PayIn as i32 && has_instructions(transaction))
}

pub(crate) fn updated_at(transaction: &pb::Transaction) -> (i64, i32) {
    transaction
        .updated_at
        .as_ref()
        .map(|t| (t.seconds, t.nanos))
        .unwrap_or_default()
}

/// What decides whether one state of a transaction replaces another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Version {
    settled: bool,
    updated_at: (i64, i32),
    status: i32,
}

impl Version {
    pub fn of(transaction: &pb::Transaction) -> Self {
        Version {
            settled: is_settled(transaction),
            updated_at: updated_at(transaction),
            status: transaction.status,
        }
    }

    /// Whether `candidate` should replace this one: never a settled state by
    /// an unsettled one (updates can arrive out of order), otherwise the
    /// later one.
    pub fn superseded_by(self, candidate: Version) -> bool {
        if self.settled && !candidate.settled {
            return false;
        }
        if candidate.settled && !self.settled {
            return true;
        }
        candidate.updated_at >= self.updated_at
    }
}

/// Whether `candidate` should replace `current` ([`Version::superseded_by`]).
pub fn supersedes(current: &pb::Transaction, candidate: &pb::Transaction) -> bool {
    Version::of(current).superseded_by(Version::of(candidate))
}

/// How many transactions a watch stream remembers the last sent state of.
const LAST_SENT_LIMIT: usize = 4096;

/// How many different contents a watch stream remembers having sent for one
/// transaction at one `updated_at` (a reconciler batch yields a few; the
/// bound only guards memory).
const CONTENTS_PER_INSTANT: usize = 8;

/// The state a watch stream last sent for each of the transactions it most
/// recently began sending (at most [`LAST_SENT_LIMIT`]): an update that does
/// not supersede it (out of order) is not sent, so a client never sees a
/// transaction go back, e.g. from `success` to `pending`.
///
/// The reconciler applies a batch of events with one `now`, so two updates
/// of one transaction can carry the same `updated_at` and status and differ
/// in content (a pay-in's payment instructions arriving in the second): an
/// update is a duplicate (a retried publish, not sent again) only if its
/// content was already sent at that `updated_at`.
#[derive(Debug, Default)]
pub struct LastSent {
    sent: HashMap<String, Sent>,
    order: std::collections::VecDeque<String>,
}

/// What a watch sent last for one transaction.
#[derive(Debug)]
struct Sent {
    version: Version,
    /// [`content_fingerprint`]s of what was sent at `version.updated_at`.
    contents: Vec<u64>,
}

impl LastSent {
    /// Whether `update` may be sent; if so, it is remembered as sent.
    pub fn admit(&mut self, update: &pb::Transaction) -> bool {
        let version = Version::of(update);
        let content = content_fingerprint(update);
        if let Some(last) = self.sent.get_mut(&update.id) {
            if !last.version.superseded_by(version) {
                return false;
            }
            if version.updated_at == last.version.updated_at {
                if last.contents.contains(&content) {
                    return false;
                }
                if last.contents.len() == CONTENTS_PER_INSTANT {
                    last.contents.remove(0);
                }
                last.contents.push(content);
            } else {
                last.contents = vec![content];
            }
            last.version = version;
            return true;
        }
        if self.order.len() == LAST_SENT_LIMIT {
            if let Some(oldest) = self.order.pop_front() {
                self.sent.remove(&oldest);
            }
        }
        self.order.push_back(update.id.clone());
        self.sent.insert(
            update.id.clone(),
            Sent {
                version,
                contents: vec![content],
            },
        );
        true
    }
}

/// A hash of everything `transaction` says, equal for equal contents
/// however they were decoded: its encoding, except the bill's `extra` map
/// (prost encodes a map in its `HashMap`'s random order), which is hashed
/// sorted instead.
fn content_fingerprint(transaction: &pb::Transaction) -> u64 {
    use std::hash::{Hash as _, Hasher as _};
    let mut canonical = transaction.clone();
    let extra = canonical
        .bill
        .as_mut()
        .map(|bill| std::mem::take(&mut bill.extra))
        .unwrap_or_default();
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    hasher.write(&canonical.encode_to_vec());
    extra
        .iter()
        .collect::<std::collections::BTreeMap<_, _>>()
        .hash(&mut hasher);
    hasher.finish()
}

/// Whose update a message on `loket.upd.<client>` is: (client, transaction),
/// the transaction named by its `Loket-Transaction` header.
pub fn addressee(subject: &str, headers: Option<&async_nats::HeaderMap>) -> Option<(Uuid, Uuid)> {
    let client = Uuid::parse_str(subjects::client_of_update(subject)?).ok()?;
    let transaction = headers?.get(subjects::TRANSACTION_HEADER)?;
    Some((client, Uuid::parse_str(transaction.as_str()).ok()?))
}

impl Waiters {
    pub fn new() -> Arc<Self> {
        Arc::new(Waiters::default())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Slot>> {
        self.slots
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Starts listening for updates of `transaction` (of `client`). Call this
    /// before reading or inserting the row.
    pub fn register(self: &Arc<Self>, client: Uuid, transaction: Uuid) -> WaitGuard {
        let mut slots = self.lock();
        let slot = slots.entry(transaction).or_insert_with(|| Slot {
            client,
            sender: watch::channel(None).0,
            waiters: 0,
        });
        slot.waiters += 1;
        WaitGuard {
            waiters: Arc::clone(self),
            transaction,
            receiver: slot.sender.subscribe(),
        }
    }

    /// Number of transactions currently waited for (for tests and metrics).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Hands one update message to whoever waits for its transaction.
    pub fn deliver(&self, subject: &str, headers: Option<&async_nats::HeaderMap>, payload: &[u8]) {
        let Some((client, transaction)) = addressee(subject, headers) else {
            return;
        };
        let slots = self.lock();
        let Some(slot) = slots.get(&transaction) else {
            return;
        };
        if slot.client != client {
            return;
        }
        let update = match pb::Transaction::decode(payload) {
            Ok(update) if update.id == transaction.to_string() => update,
            Ok(_) => return,
            Err(error) => {
                tracing::warn!(%error, subject, "undecodable transaction update");
                return;
            }
        };
        slot.sender.send_if_modified(|current| match current {
            Some(existing) if !supersedes(existing, &update) => false,
            _ => {
                *current = Some(update);
                true
            }
        });
    }

    /// Feeds [`Self::deliver`] from the process's update subscription until
    /// it ends or `shutdown` fires.
    pub async fn run(
        self: Arc<Self>,
        mut updates: async_nats::Subscriber,
        shutdown: loket_runtime::Shutdown,
    ) {
        use futures::StreamExt as _;
        loop {
            tokio::select! {
                _ = shutdown.wait() => break,
                message = updates.next() => match message {
                    Some(message) => self.deliver(message.subject.as_str(), message.headers.as_ref(), &message.payload),
                    None => {
                        tracing::warn!("update subscription ended");
                        break;
                    }
                },
            }
        }
    }

    fn release(&self, transaction: Uuid) {
        let mut slots = self.lock();
        if let Some(slot) = slots.get_mut(&transaction) {
            slot.waiters -= 1;
            if slot.waiters == 0 {
                slots.remove(&transaction);
            }
        }
    }
}

/// One caller's registration; unregisters on drop.
pub struct WaitGuard {
    waiters: Arc<Waiters>,
    transaction: Uuid,
    receiver: watch::Receiver<Option<pb::Transaction>>,
}

/// Why a wait ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitEnd {
    Settled,
    Deadline,
    Shutdown,
}

impl WaitGuard {
    /// Waits from `current` until the transaction settles, `deadline` passes
    /// or the service drains; returns the latest state seen.
    pub async fn until_settled(
        &mut self,
        current: pb::Transaction,
        deadline: Instant,
        shutdown: &loket_runtime::Shutdown,
    ) -> (pb::Transaction, WaitEnd) {
        self.until(current, deadline, shutdown, is_settled).await
    }

    /// Waits from `current` until `done` holds for the latest state seen
    /// (then [`WaitEnd::Settled`]), `deadline` passes or the service drains.
    pub async fn until(
        &mut self,
        mut current: pb::Transaction,
        deadline: Instant,
        shutdown: &loket_runtime::Shutdown,
        done: impl Fn(&pb::Transaction) -> bool,
    ) -> (pb::Transaction, WaitEnd) {
        loop {
            if let Some(update) = self.receiver.borrow_and_update().as_ref() {
                if supersedes(&current, update) {
                    current = update.clone();
                }
            }
            if done(&current) {
                return (current, WaitEnd::Settled);
            }
            tokio::select! {
                changed = self.receiver.changed() => {
                    if changed.is_err() {
                        // Cannot happen while we hold a registration; wait out the deadline.
                        tokio::time::sleep_until(deadline).await;
                        return (current, WaitEnd::Deadline);
                    }
                }
                _ = tokio::time::sleep_until(deadline) => return (current, WaitEnd::Deadline),
                _ = shutdown.wait() => return (current, WaitEnd::Shutdown),
            }
        }
    }
}

impl Drop for WaitGuard {
    fn drop(&mut self) {
        self.waiters.release(self.transaction);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn txn(id: Uuid, status: pb::TransactionStatus, seconds: i64) -> pb::Transaction {
        pb::Transaction {
            id: id.to_string(),
            status: status as i32,
            updated_at: Some(prost_types::Timestamp { seconds, nanos: 0 }),
            ..Default::default()
        }
    }

    /// Hands `update` to `waiters` as the reconciler publishes it: on its
    /// client's subject, `transaction` in the header.
    fn deliver(waiters: &Waiters, client: Uuid, transaction: Uuid, update: &pb::Transaction) {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(
            subjects::TRANSACTION_HEADER,
            transaction.to_string().as_str(),
        );
        waiters.deliver(
            &subjects::update(&client.to_string()),
            Some(&headers),
            &update.encode_to_vec(),
        );
    }

    #[test]
    fn an_update_is_addressed_by_its_subject_and_header() {
        let (c, t) = (Uuid::now_v7(), Uuid::now_v7());
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(subjects::TRANSACTION_HEADER, t.to_string().as_str());
        let subject = subjects::update(&c.to_string());
        assert_eq!(addressee(&subject, Some(&headers)), Some((c, t)));
        assert_eq!(addressee(&subject, None), None, "no header");
        assert_eq!(addressee(&format!("{subject}.{t}"), Some(&headers)), None);
        assert_eq!(addressee("loket.upd.x", Some(&headers)), None);
        let mut garbled = async_nats::HeaderMap::new();
        garbled.insert(subjects::TRANSACTION_HEADER, "not-a-uuid");
        assert_eq!(addressee(&subject, Some(&garbled)), None);
    }

    #[test]
    fn an_update_whose_payload_names_another_transaction_is_dropped() {
        let waiters = Waiters::new();
        let (client, id) = (Uuid::now_v7(), Uuid::now_v7());
        let guard = waiters.register(client, id);
        deliver(
            &waiters,
            client,
            id,
            &txn(Uuid::now_v7(), pb::TransactionStatus::Success, 2),
        );
        assert!(guard.receiver.borrow().is_none());
        deliver(
            &waiters,
            client,
            id,
            &txn(id, pb::TransactionStatus::Success, 2),
        );
        assert!(guard.receiver.borrow().is_some());
    }

    #[test]
    fn a_watch_sends_each_state_once_and_never_goes_back() {
        let mut last_sent = LastSent::default();
        let id = Uuid::now_v7();
        let success = txn(id, pb::TransactionStatus::Success, 10);
        assert!(last_sent.admit(&success));
        // The same state again (a retried publish), and an older one that
        // arrived late: neither is sent.
        assert!(!last_sent.admit(&success));
        assert!(!last_sent.admit(&txn(id, pb::TransactionStatus::Pending, 5)));
        // A later settled state (a contradiction parked for review) is.
        assert!(last_sent.admit(&txn(id, pb::TransactionStatus::NeedsReview, 11)));
        // Other transactions are independent, and the memory is bounded.
        for n in 0..LAST_SENT_LIMIT as i64 {
            assert!(last_sent.admit(&txn(Uuid::now_v7(), pb::TransactionStatus::Pending, n)));
        }
        assert_eq!(last_sent.sent.len(), LAST_SENT_LIMIT);
        assert!(!last_sent.sent.contains_key(&id.to_string()));
    }

    /// The reconciler applies a batch with one `now`, so a Smilepayz pay-in
    /// can go `received` → `pending` → `pending` with its payment
    /// instructions, the last two with the same `updated_at`: the watch
    /// sends the instructions, and still drops true duplicates.
    #[test]
    fn a_watch_sends_new_content_at_the_same_status_and_time_once() {
        let mut last_sent = LastSent::default();
        let id = Uuid::now_v7();
        let mut without_instructions = txn(id, pb::TransactionStatus::Pending, 10);
        without_instructions.kind = pb::TransactionKind::PayIn as i32;
        let mut with_instructions = without_instructions.clone();
        with_instructions.payment = Some(pb::PaymentInstructions {
            method: "QRIS".into(),
            qr_string: "00020101021226...".into(),
            ..Default::default()
        });
        assert!(last_sent.admit(&without_instructions));
        assert!(
            last_sent.admit(&with_instructions),
            "the pay-in's payment instructions never reach the watch"
        );
        // Either again (a retried publish) is a duplicate, in any order.
        assert!(!last_sent.admit(&with_instructions));
        assert!(!last_sent.admit(&without_instructions));
        // A settled state is still never followed by an unsettled one.
        let success = txn(id, pb::TransactionStatus::Success, 10);
        assert!(last_sent.admit(&success));
        let mut pending_again = with_instructions.clone();
        pending_again.serial_number = "late".into();
        assert!(!last_sent.admit(&pending_again));
    }

    /// A bill's `extra` map is encoded in its `HashMap`'s random order: the
    /// same update decoded twice (the row read at watch start, then the
    /// reconciler's publish of it) is one content, sent once.
    #[test]
    fn the_same_bill_decoded_twice_is_one_content() {
        let mut update = txn(Uuid::now_v7(), pb::TransactionStatus::Success, 10);
        update.bill = Some(pb::BillDetails {
            extra: (0..32)
                .map(|n| (format!("field{n}"), format!("value{n}")))
                .collect(),
            ..Default::default()
        });
        let encoded = update.encode_to_vec();
        let mut last_sent = LastSent::default();
        assert!(last_sent.admit(&pb::Transaction::decode(encoded.as_slice()).unwrap()));
        assert!(!last_sent.admit(&pb::Transaction::decode(encoded.as_slice()).unwrap()));
    }

    #[test]
    fn settled_states_are_never_replaced_by_older_progress() {
        let id = Uuid::now_v7();
        let success = txn(id, pb::TransactionStatus::Success, 10);
        let pending_late = txn(id, pb::TransactionStatus::Pending, 20);
        assert!(!supersedes(&success, &pending_late));
        assert!(supersedes(
            &txn(id, pb::TransactionStatus::Received, 30),
            &success
        ));
        assert!(supersedes(
            &success,
            &txn(id, pb::TransactionStatus::NeedsReview, 11)
        ));
    }

    #[tokio::test]
    async fn a_waiter_returns_on_the_settling_update_and_unregisters() {
        let waiters = Waiters::new();
        let (client, id) = (Uuid::now_v7(), Uuid::now_v7());
        let mut guard = waiters.register(client, id);
        let shutdown = loket_runtime::Shutdown::new();
        let deliverer = Arc::clone(&waiters);
        let feed = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            deliver(
                &deliverer,
                client,
                id,
                &txn(id, pb::TransactionStatus::Pending, 2),
            );
            // Another client's subject for the same id is ignored.
            let spoof = Uuid::now_v7();
            deliver(
                &deliverer,
                spoof,
                id,
                &txn(id, pb::TransactionStatus::Failed, 3),
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
            deliver(
                &deliverer,
                client,
                id,
                &txn(id, pb::TransactionStatus::Success, 4),
            );
        });
        let start = txn(id, pb::TransactionStatus::Received, 1);
        let (last, end) = guard
            .until_settled(start, Instant::now() + Duration::from_secs(5), &shutdown)
            .await;
        feed.await.unwrap();
        assert_eq!(end, WaitEnd::Settled);
        assert_eq!(last.status, pb::TransactionStatus::Success as i32);
        drop(guard);
        assert!(waiters.is_empty());
    }

    #[test]
    fn a_pay_in_is_ready_once_it_has_instructions() {
        let id = Uuid::now_v7();
        let mut pay_in = txn(id, pb::TransactionStatus::Pending, 1);
        pay_in.kind = pb::TransactionKind::PayIn as i32;
        assert!(!is_ready(&pay_in));
        pay_in.payment = Some(pb::PaymentInstructions {
            method: "QRIS".into(),
            ..Default::default()
        });
        assert!(!is_ready(&pay_in), "a method alone is not an instruction");
        pay_in.payment.as_mut().unwrap().qr_string = "000201...".into();
        assert!(is_ready(&pay_in));
        // The same instructions on another kind do not end a wait.
        let mut qr = pay_in.clone();
        qr.kind = pb::TransactionKind::QrPayment as i32;
        assert!(!is_ready(&qr));
        qr.status = pb::TransactionStatus::Failed as i32;
        assert!(is_ready(&qr));
    }

    #[tokio::test]
    async fn a_pay_in_waiter_returns_on_the_first_update_with_instructions() {
        let waiters = Waiters::new();
        let (client, id) = (Uuid::now_v7(), Uuid::now_v7());
        let mut guard = waiters.register(client, id);
        let mut pending = txn(id, pb::TransactionStatus::Pending, 2);
        pending.kind = pb::TransactionKind::PayIn as i32;
        deliver(&waiters, client, id, &pending);
        let mut with_va = pending.clone();
        with_va.updated_at = Some(prost_types::Timestamp {
            seconds: 3,
            nanos: 0,
        });
        with_va.payment = Some(pb::PaymentInstructions {
            method: "BCA".into(),
            va_number: "8808123".into(),
            ..Default::default()
        });
        let deliverer = Arc::clone(&waiters);
        let feed = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            deliver(&deliverer, client, id, &with_va);
        });
        let mut start = txn(id, pb::TransactionStatus::Received, 1);
        start.kind = pb::TransactionKind::PayIn as i32;
        let (last, end) = guard
            .until(
                start,
                Instant::now() + Duration::from_secs(5),
                &loket_runtime::Shutdown::new(),
                is_ready,
            )
            .await;
        feed.await.unwrap();
        assert_eq!(end, WaitEnd::Settled);
        assert_eq!(last.status, pb::TransactionStatus::Pending as i32);
        assert_eq!(last.payment.unwrap().va_number, "8808123");
    }

    #[tokio::test]
    async fn a_waiter_returns_the_latest_state_at_the_deadline_or_on_shutdown() {
        let waiters = Waiters::new();
        let (client, id) = (Uuid::now_v7(), Uuid::now_v7());
        let mut first = waiters.register(client, id);
        let mut second = waiters.register(client, id);
        deliver(
            &waiters,
            client,
            id,
            &txn(id, pb::TransactionStatus::Pending, 2),
        );
        let shutdown = loket_runtime::Shutdown::new();
        let start = txn(id, pb::TransactionStatus::Received, 1);
        let (last, end) = first
            .until_settled(
                start.clone(),
                Instant::now() + Duration::from_millis(30),
                &shutdown,
            )
            .await;
        assert_eq!(
            (end, last.status),
            (WaitEnd::Deadline, pb::TransactionStatus::Pending as i32)
        );
        shutdown.trigger();
        let (_, end) = second
            .until_settled(start, Instant::now() + Duration::from_secs(30), &shutdown)
            .await;
        assert_eq!(end, WaitEnd::Shutdown);
        drop(first);
        assert_eq!(waiters.len(), 1);
        drop(second);
        assert!(waiters.is_empty());
    }
}
