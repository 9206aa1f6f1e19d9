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

/// Where a call with a key stands, as its duplicates see it.
#[derive(Clone, Debug)]
pub(crate) enum State {
    Running,
    Done(Arc<Reply>),
    /// It ended without a response to repeat (cancelled, its caller left):
    /// a duplicate should run it again.
    Abandoned,
}

type Sender = Arc<watch::Sender<State>>;

/// What a duplicate waits on.
pub(crate) type Slot = watch::Receiver<State>;

/// Whose key: the caller's principal and the key it chose. Keys of
/// different callers never meet, so one caller cannot read another's
/// results by guessing its keys.
type Key = ([u8; 8], [u8; 16]);

/// Recently seen idempotency keys and their responses, bounded in count,
/// age and bytes.
pub(crate) struct Dedup {
    entries: Mutex<Entries>,
    ttl: Duration,
    capacity: usize,
    max_bytes: u64,
}

struct Entry {
    sender: Sender,
    /// Tells this entry from a later one of the same key.
    id: u64,
    /// Bytes of its remembered response (0 while running).
    bytes: u64,
}

#[derive(Default)]
struct Entries {
    by_key: HashMap<Key, Entry>,
    /// Keys in the order they arrived, for expiry by age and count.
    order: VecDeque<(Key, u64, Instant)>,
    /// Remembered responses in the order they finished, for the byte bound.
    finished: VecDeque<(Key, u64)>,
    bytes: u64,
    next_id: u64,
}

impl Entries {
    /// Removes `key`'s entry if it is still entry `id`.
    fn remove(&mut self, key: &Key, id: u64) {
        if self.by_key.get(key).is_some_and(|entry| entry.id == id)
            && let Some(entry) = self.by_key.remove(key)
        {
            self.bytes -= entry.bytes;
        }
    }
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
    key: Key,
    id: u64,
    sender: Sender,
    finished: bool,
    dedup: Arc<Dedup>,
}

/// Tells whether any duplicate still waits for a running call.
#[derive(Clone, Debug)]
pub(crate) struct Waiters(Sender);

impl Waiters {
    /// Resolves once no duplicate waits (at once if none does).
    pub(crate) async fn none_left(&self) {
        self.0.closed().await;
    }
}

impl Dedup {
    pub(crate) fn new(ttl: Duration, capacity: usize, max_bytes: u64) -> Dedup {
        Dedup {
            entries: Mutex::new(Entries::default()),
            ttl,
            capacity: capacity.max(1),
            max_bytes,
        }
    }

    pub(crate) fn claim(self: &Arc<Self>, principal: [u8; 8], key: [u8; 16]) -> Claim {
        let key = (principal, key);
        let now = Instant::now();
        let mut entries = self.lock();
        while let Some(&(old, id, at)) = entries.order.front() {
            if now.duration_since(at) < self.ttl && entries.order.len() < self.capacity {
                break;
            }
            entries.order.pop_front();
            entries.remove(&old, id);
        }
        if let Some(entry) = entries.by_key.get(&key) {
            return Claim::Wait(entry.sender.subscribe());
        }
        let id = entries.next_id;
        entries.next_id += 1;
        let sender = Arc::new(watch::Sender::new(State::Running));
        entries.by_key.insert(
            key,
            Entry {
                sender: Arc::clone(&sender),
                id,
                bytes: 0,
            },
        );
        entries.order.push_back((key, id, now));
        Claim::Run(Completion {
            key,
            id,
            sender,
            finished: false,
            dedup: Arc::clone(self),
        })
    }

    /// Remembers `reply` as key `id`'s response, forgetting the oldest
    /// responses past the byte bound; `false` if it is too large to keep.
    fn remember(&self, key: &Key, id: u64, reply: &Reply) -> bool {
        let bytes = (reply.payload.len() + reply.message.len()) as u64;
        if bytes > self.max_bytes {
            return false;
        }
        let mut entries = self.lock();
        let Some(entry) = entries.by_key.get_mut(key).filter(|entry| entry.id == id) else {
            return false;
        };
        entry.bytes = bytes;
        entries.bytes += bytes;
        entries.finished.push_back((*key, id));
        while entries.bytes > self.max_bytes {
            let Some((old, old_id)) = entries.finished.pop_front() else {
                break;
            };
            entries.remove(&old, old_id);
        }
        true
    }

    fn forget(&self, key: &Key, id: u64) {
        self.lock().remove(key, id);
    }

    /// Bytes of responses remembered now.
    #[cfg(test)]
    fn bytes(&self) -> u64 {
        self.lock().bytes
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Completion {
    /// Who waits for this call's response.
    pub(crate) fn waiters(&self) -> Waiters {
        Waiters(Arc::clone(&self.sender))
    }

    /// Publishes the response to duplicates. Responses a retry should not
    /// repeat (cancelled, unavailable), and responses too large to keep,
    /// make the key forgotten instead, after the duplicates waiting now get
    /// this one.
    pub(crate) fn finish(mut self, reply: &Reply) {
        let retryable = matches!(
            reply.status,
            StatusCode::CANCELLED | StatusCode::UNAVAILABLE
        );
        if retryable {
            return; // Dropping forgets the key.
        }
        self.finished = self.dedup.remember(&self.key, self.id, reply);
        self.sender
            .send_replace(State::Done(Arc::new(reply.clone())));
    }
}

impl Drop for Completion {
    fn drop(&mut self) {
        if !self.finished {
            self.dedup.forget(&self.key, self.id);
            self.sender.send_if_modified(|state| match state {
                State::Running => {
                    *state = State::Abandoned;
                    true
                }
                _ => false,
            });
        }
    }
}

/// Waits for the first call's response; `None` if it was abandoned.
pub(crate) async fn wait(mut slot: Slot) -> Option<Arc<Reply>> {
    loop {
        match &*slot.borrow_and_update() {
            State::Done(reply) => return Some(Arc::clone(reply)),
            State::Abandoned => return None,
            State::Running => {}
        }
        if slot.changed().await.is_err() {
            return None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: [u8; 8] = [1; 8];

    fn ok(payload: &'static [u8]) -> Reply {
        Reply {
            status: StatusCode::OK,
            message: String::new(),
            payload: bytes::Bytes::from_static(payload),
        }
    }

    #[tokio::test]
    async fn a_duplicate_gets_the_first_response() {
        let dedup = Arc::new(Dedup::new(Duration::from_secs(60), 100, 1 << 20));
        let Claim::Run(first) = dedup.claim(ME, [1; 16]) else {
            panic!("the first claim runs");
        };
        let Claim::Wait(slot) = dedup.claim(ME, [1; 16]) else {
            panic!("the second claim waits");
        };
        let waiter = tokio::spawn(wait(slot));
        first.finish(&ok(b"done"));
        let reply = waiter.await.unwrap().unwrap();
        assert_eq!(&reply.payload[..], b"done");
        // Later duplicates get it at once.
        let Claim::Wait(slot) = dedup.claim(ME, [1; 16]) else {
            panic!("still remembered");
        };
        assert!(wait(slot).await.is_some());
    }

    #[tokio::test]
    async fn an_abandoned_call_is_forgotten() {
        let dedup = Arc::new(Dedup::new(Duration::from_secs(60), 100, 1 << 20));
        let Claim::Run(first) = dedup.claim(ME, [2; 16]) else {
            panic!("the first claim runs");
        };
        let Claim::Wait(slot) = dedup.claim(ME, [2; 16]) else {
            panic!("the second claim waits");
        };
        drop(first);
        assert!(wait(slot).await.is_none());
        assert!(matches!(dedup.claim(ME, [2; 16]), Claim::Run(_)));
    }

    #[tokio::test]
    async fn keys_expire_by_age_and_by_count() {
        let dedup = Arc::new(Dedup::new(Duration::from_secs(60), 2, 1 << 20));
        for key in 0..3u8 {
            if let Claim::Run(completion) = dedup.claim(ME, [key; 16]) {
                completion.finish(&ok(b""));
            }
        }
        assert!(
            matches!(dedup.claim(ME, [0; 16]), Claim::Run(_)),
            "the oldest key made room"
        );
    }

    #[test]
    fn remembered_responses_are_bounded_in_bytes_oldest_out_first() {
        let dedup = Arc::new(Dedup::new(Duration::from_secs(60), 100, 10));
        for key in 0..4u8 {
            let Claim::Run(completion) = dedup.claim(ME, [key; 16]) else {
                panic!("a new key runs");
            };
            completion.finish(&ok(b"1234"));
        }
        assert_eq!(dedup.bytes(), 8, "two responses of four bytes fit in ten");
        assert!(
            matches!(dedup.claim(ME, [0; 16]), Claim::Run(_)),
            "forgotten"
        );
        assert!(matches!(dedup.claim(ME, [3; 16]), Claim::Wait(_)), "kept");
        let Claim::Run(huge) = dedup.claim(ME, [9; 16]) else {
            panic!("a new key runs");
        };
        huge.finish(&ok(b"more than ten bytes"));
        assert!(
            matches!(dedup.claim(ME, [9; 16]), Claim::Run(_)),
            "a response over the bound is not kept"
        );
    }

    #[test]
    fn keys_of_different_callers_never_meet() {
        let dedup = Arc::new(Dedup::new(Duration::from_secs(60), 100, 1 << 20));
        let Claim::Run(mine) = dedup.claim(ME, [5; 16]) else {
            panic!("a new key runs");
        };
        mine.finish(&ok(b"secret"));
        assert!(matches!(dedup.claim([7; 8], [5; 16]), Claim::Run(_)));
    }

    #[tokio::test]
    async fn waiters_are_counted_until_they_leave() {
        let dedup = Arc::new(Dedup::new(Duration::from_secs(60), 100, 1 << 20));
        let Claim::Run(first) = dedup.claim(ME, [6; 16]) else {
            panic!("a new key runs");
        };
        let waiters = first.waiters();
        waiters.none_left().await;
        let Claim::Wait(slot) = dedup.claim(ME, [6; 16]) else {
            panic!("a duplicate waits");
        };
        let none_left = waiters.none_left();
        tokio::pin!(none_left);
        assert!(
            futures_util::FutureExt::now_or_never(none_left.as_mut()).is_none(),
            "a duplicate waits"
        );
        drop(slot);
        none_left.await;
    }
}
