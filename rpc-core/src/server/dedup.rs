//! Duplicate suppression for retried calls: a call whose idempotency key was
//! seen recently gets the first call's response instead of running again.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

pub(crate) use crate::conn::Reply;
use crate::server::registry::Outcome;
use crate::wire::StatusCode;

impl From<Outcome> for Reply {
    fn from(outcome: Outcome) -> Reply {
        let (status, message, payload) = match outcome {
            Outcome::Ok(payload) => (StatusCode::OK, String::new(), payload),
            Outcome::Failed(payload) => (StatusCode::APPLICATION_ERROR, String::new(), payload),
            Outcome::Status(status, message) => (status, message, bytes::Bytes::new()),
        };
        Reply {
            status,
            message,
            payload,
        }
    }
}

type Slot = watch::Receiver<Option<Arc<Reply>>>;

/// Recently seen idempotency keys and their responses.
pub(crate) struct Dedup {
    entries: Mutex<Entries>,
    ttl: Duration,
    capacity: usize,
}

#[derive(Default)]
struct Entries {
    by_key: HashMap<[u8; 16], Slot>,
    /// Keys in the order they arrived, for expiry.
    order: VecDeque<([u8; 16], Instant)>,
}

/// The outcome of presenting a key.
pub(crate) enum Claim {
    /// First time: run the call, then report through the completion.
    Run(Completion),
    /// A duplicate: wait for (or take) the first call's response.
    Wait(Slot),
}

/// Reports the response of the first call with a key. Dropped without
/// [`finish`](Completion::finish) (the call was abandoned), it forgets the
/// key, so a retry runs the call again.
pub(crate) struct Completion {
    key: [u8; 16],
    sender: Option<watch::Sender<Option<Arc<Reply>>>>,
    dedup: Arc<Dedup>,
}

impl Dedup {
    pub(crate) fn new(ttl: Duration, capacity: usize) -> Dedup {
        Dedup {
            entries: Mutex::new(Entries::default()),
            ttl,
            capacity: capacity.max(1),
        }
    }

    pub(crate) fn claim(self: &Arc<Self>, key: [u8; 16]) -> Claim {
        let now = Instant::now();
        let mut entries = self.lock();
        while let Some(&(old, at)) = entries.order.front() {
            if now.duration_since(at) < self.ttl && entries.order.len() < self.capacity {
                break;
            }
            entries.order.pop_front();
            entries.by_key.remove(&old);
        }
        if let Some(slot) = entries.by_key.get(&key) {
            return Claim::Wait(slot.clone());
        }
        let (sender, slot) = watch::channel(None);
        entries.by_key.insert(key, slot);
        entries.order.push_back((key, now));
        Claim::Run(Completion {
            key,
            sender: Some(sender),
            dedup: Arc::clone(self),
        })
    }

    fn forget(&self, key: &[u8; 16]) {
        self.lock().by_key.remove(key);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Completion {
    /// Publishes the response to duplicates. Responses a retry should not
    /// repeat (cancelled, unavailable) make the key forgotten instead.
    pub(crate) fn finish(mut self, reply: &Reply) {
        let retryable = matches!(
            reply.status,
            StatusCode::CANCELLED | StatusCode::UNAVAILABLE
        );
        if retryable {
            return; // Dropping forgets the key.
        }
        if let Some(sender) = self.sender.take() {
            sender.send_replace(Some(Arc::new(reply.clone())));
        }
    }
}

impl Drop for Completion {
    fn drop(&mut self) {
        if self.sender.is_some() {
            self.dedup.forget(&self.key);
        }
    }
}

/// Waits for the first call's response; `None` if it was abandoned.
pub(crate) async fn wait(mut slot: Slot) -> Option<Arc<Reply>> {
    loop {
        if let Some(reply) = slot.borrow_and_update().clone() {
            return Some(reply);
        }
        if slot.changed().await.is_err() {
            return slot.borrow().clone();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(payload: &'static [u8]) -> Reply {
        Reply {
            status: StatusCode::OK,
            message: String::new(),
            payload: bytes::Bytes::from_static(payload),
        }
    }

    #[tokio::test]
    async fn a_duplicate_gets_the_first_response() {
        let dedup = Arc::new(Dedup::new(Duration::from_secs(60), 100));
        let Claim::Run(first) = dedup.claim([1; 16]) else {
            panic!("the first claim runs");
        };
        let Claim::Wait(slot) = dedup.claim([1; 16]) else {
            panic!("the second claim waits");
        };
        let waiter = tokio::spawn(wait(slot));
        first.finish(&ok(b"done"));
        let reply = waiter.await.unwrap().unwrap();
        assert_eq!(&reply.payload[..], b"done");
        // Later duplicates get it at once.
        let Claim::Wait(slot) = dedup.claim([1; 16]) else {
            panic!("still remembered");
        };
        assert!(wait(slot).await.is_some());
    }

    #[tokio::test]
    async fn an_abandoned_call_is_forgotten() {
        let dedup = Arc::new(Dedup::new(Duration::from_secs(60), 100));
        let Claim::Run(first) = dedup.claim([2; 16]) else {
            panic!("the first claim runs");
        };
        let Claim::Wait(slot) = dedup.claim([2; 16]) else {
            panic!("the second claim waits");
        };
        drop(first);
        assert!(wait(slot).await.is_none());
        assert!(matches!(dedup.claim([2; 16]), Claim::Run(_)));
    }

    #[tokio::test]
    async fn keys_expire_by_age_and_by_count() {
        let dedup = Arc::new(Dedup::new(Duration::from_secs(60), 2));
        for key in 0..3u8 {
            if let Claim::Run(completion) = dedup.claim([key; 16]) {
                completion.finish(&ok(b""));
            }
        }
        assert!(
            matches!(dedup.claim([0; 16]), Claim::Run(_)),
            "the oldest key made room"
        );
    }
}
