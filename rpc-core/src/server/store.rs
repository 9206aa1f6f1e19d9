//! The server's stores: named values that peers send and request, and
//! programs identified by their SHA-256, each bounded in total bytes.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Mutex, PoisonError};

use bytes::Bytes;

/// A map of byte values whose total size is bounded.
#[derive(Debug)]
pub(crate) struct BoundedStore<K> {
    inner: Mutex<Inner<K>>,
    max_bytes: u64,
}

#[derive(Debug)]
struct Inner<K> {
    values: HashMap<K, Bytes>,
    bytes: u64,
}

/// Storing a value would pass the store's limit.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct StoreFull {
    pub(crate) len: u64,
    pub(crate) free: u64,
}

impl<K: Hash + Eq> BoundedStore<K> {
    pub(crate) fn new(max_bytes: u64) -> BoundedStore<K> {
        BoundedStore {
            inner: Mutex::new(Inner {
                values: HashMap::new(),
                bytes: 0,
            }),
            max_bytes,
        }
    }

    /// Stores `value` under `key`, replacing any older value.
    pub(crate) fn insert(&self, key: K, value: Bytes) -> Result<(), StoreFull> {
        let mut inner = self.lock();
        let old = inner.values.get(&key).map_or(0, |old| old.len() as u64);
        let len = value.len() as u64;
        let used = inner.bytes - old;
        if used + len > self.max_bytes {
            return Err(StoreFull {
                len,
                free: self.max_bytes - used,
            });
        }
        inner.bytes = used + len;
        inner.values.insert(key, value);
        Ok(())
    }

    pub(crate) fn get(&self, key: &K) -> Option<Bytes> {
        self.lock().values.get(key).cloned()
    }

    pub(crate) fn contains(&self, key: &K) -> bool {
        self.lock().values.contains_key(key)
    }

    /// The most bytes the store holds.
    pub(crate) fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Whether `len` more bytes could be stored at all.
    pub(crate) fn fits(&self, len: u64) -> bool {
        len <= self.max_bytes
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<K>> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_total_is_bounded_and_replacing_frees_the_old_value() {
        let store = BoundedStore::new(10);
        store.insert("a", Bytes::from_static(b"123456")).unwrap();
        assert_eq!(
            store.insert("b", Bytes::from_static(b"12345")),
            Err(StoreFull { len: 5, free: 4 })
        );
        store.insert("a", Bytes::from_static(b"1")).unwrap();
        store.insert("b", Bytes::from_static(b"123456789")).unwrap();
        assert_eq!(store.get(&"b").unwrap().len(), 9);
        assert!(store.contains(&"a"));
        assert!(!store.fits(11));
    }
}
