//! The in-memory half of the module cache: compiled modules, least
//! recently used evicted first once their total size passes a budget.

use std::collections::HashMap;
use std::sync::Arc;

use rpc_core::ContentHash;

/// Values with a size, evicted least recently used first.
#[derive(Debug)]
pub(crate) struct Lru<V> {
    entries: HashMap<ContentHash, Entry<V>>,
    bytes: u64,
    budget: u64,
    clock: u64,
}

#[derive(Debug)]
struct Entry<V> {
    value: Arc<V>,
    size: u64,
    used: u64,
}

impl<V> Lru<V> {
    pub(crate) fn new(budget: u64) -> Lru<V> {
        Lru {
            entries: HashMap::new(),
            bytes: 0,
            budget,
            clock: 0,
        }
    }

    /// Bytes held now.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    pub(crate) fn get(&mut self, key: &ContentHash) -> Option<Arc<V>> {
        self.clock += 1;
        let entry = self.entries.get_mut(key)?;
        entry.used = self.clock;
        Some(Arc::clone(&entry.value))
    }

    /// Inserts, then evicts the least recently used others until the total
    /// fits the budget. The newest entry always stays, even if alone it is
    /// larger than the budget: jobs holding it keep it alive anyway.
    pub(crate) fn insert(&mut self, key: ContentHash, value: Arc<V>, size: u64) {
        self.clock += 1;
        if let Some(old) = self.entries.insert(
            key,
            Entry {
                value,
                size,
                used: self.clock,
            },
        ) {
            self.bytes -= old.size;
        }
        self.bytes += size;
        while self.bytes > self.budget {
            let oldest = self
                .entries
                .iter()
                .filter(|(k, _)| **k != key)
                .min_by_key(|(_, entry)| entry.used)
                .map(|(k, _)| *k);
            let Some(oldest) = oldest else { break };
            if let Some(evicted) = self.entries.remove(&oldest) {
                self.bytes -= evicted.size;
            }
        }
    }

    pub(crate) fn keys(&self) -> Vec<ContentHash> {
        self.entries.keys().copied().collect()
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> ContentHash {
        ContentHash::from_bytes([n; 32])
    }

    #[test]
    fn least_recently_used_goes_first() {
        let mut lru = Lru::new(100);
        lru.insert(key(1), Arc::new("one"), 40);
        lru.insert(key(2), Arc::new("two"), 40);
        assert!(lru.get(&key(1)).is_some()); // 2 is now the oldest
        lru.insert(key(3), Arc::new("three"), 40);
        assert!(lru.get(&key(2)).is_none());
        assert!(lru.get(&key(1)).is_some());
        assert!(lru.get(&key(3)).is_some());
        // One entry above the budget stays alone.
        lru.insert(key(4), Arc::new("four"), 500);
        assert_eq!(lru.len(), 1);
        assert!(lru.get(&key(4)).is_some());
    }
}
