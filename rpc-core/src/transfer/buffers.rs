//! Reuse of the large buffers chunked payloads are joined into.
//!
//! A fresh multi-megabyte allocation is mapped anew by the allocator and
//! faulted in page by page, which costs more than moving the bytes: in the
//! bulk benchmark, 16 MiB echoes ran at about 0.3x of a bare socket, and at
//! 0.8x with the allocator told to keep its memory. Chunked payloads are
//! therefore gathered in buffers that come back here when the last `Bytes`
//! sharing them is dropped, and the next large payload reuses one that is
//! already mapped.

use std::sync::{Mutex, PoisonError};

use bytes::Bytes;

/// Payloads smaller than this are joined in ordinary allocations: the
/// allocator serves them from memory it keeps anyway.
pub(crate) const MIN_POOLED_LEN: usize = 1 << 20;

/// At most this many bytes of idle buffers are kept, for the whole process.
pub(crate) const MAX_POOLED_BYTES: usize = 64 << 20;

/// Idle buffers, and their total capacity.
static IDLE: Mutex<(Vec<Vec<u8>>, usize)> = Mutex::new((Vec::new(), 0));

/// An empty buffer for a payload of `len` bytes: an idle one with room for
/// them all when `len` is large and one fits, or else a new one with room
/// for `first` bytes, which grows as bytes arrive (so that memory follows
/// what a peer sends, not what it announces).
pub(crate) fn buffer(len: usize, first: usize) -> Buffer {
    let fresh = || Buffer(Vec::with_capacity(first.min(len)));
    if len < MIN_POOLED_LEN {
        return fresh();
    }
    let mut idle = IDLE.lock().unwrap_or_else(PoisonError::into_inner);
    let (buffers, total) = &mut *idle;
    // The smallest that fits, so that large buffers stay for large payloads.
    let best = buffers
        .iter()
        .enumerate()
        .filter(|(_, buffer)| buffer.capacity() >= len)
        .min_by_key(|(_, buffer)| buffer.capacity())
        .map(|(index, _)| index);
    if let Some(index) = best {
        let mut buffer = buffers.swap_remove(index);
        *total -= buffer.capacity();
        buffer.clear();
        return Buffer(buffer);
    }
    drop(idle);
    fresh()
}

/// A payload's buffer; a large one goes back to the pool when dropped, or
/// when the last `Bytes` made from it by [`freeze`](Self::freeze) is.
#[derive(Debug)]
pub(crate) struct Buffer(Vec<u8>);

impl Buffer {
    /// Appends `bytes`.
    pub(crate) fn extend_from_slice(&mut self, bytes: &[u8]) {
        self.0.extend_from_slice(bytes);
    }

    /// The bytes, shared.
    pub(crate) fn freeze(self) -> Bytes {
        if self.0.capacity() < MIN_POOLED_LEN {
            let mut this = std::mem::ManuallyDrop::new(self);
            return Bytes::from(std::mem::take(&mut this.0));
        }
        Bytes::from_owner(self)
    }
}

impl AsRef<[u8]> for Buffer {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        let buffer = std::mem::take(&mut self.0);
        let capacity = buffer.capacity();
        if capacity < MIN_POOLED_LEN {
            return;
        }
        let mut idle = IDLE.lock().unwrap_or_else(PoisonError::into_inner);
        let (buffers, total) = &mut *idle;
        if *total + capacity <= MAX_POOLED_BYTES {
            *total += capacity;
            buffers.push(buffer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn join(parts: &[Bytes], len: usize) -> Bytes {
        let mut buffer = buffer(len, len);
        for part in parts {
            buffer.extend_from_slice(part);
        }
        buffer.freeze()
    }

    #[test]
    fn large_payloads_hold_exactly_their_own_bytes_in_reused_buffers() {
        let len = MIN_POOLED_LEN + 10;
        let parts = [Bytes::from(vec![1u8; len - 10]), Bytes::from(vec![2u8; 10])];
        let first = join(&parts, len);

        assert_eq!(first.len(), len);
        assert!(first[..len - 10].iter().all(|&byte| byte == 1));
        assert!(first[len - 10..].iter().all(|&byte| byte == 2));
        drop(first);

        // A shorter payload, likely in the buffer just returned, holds only
        // its own bytes: nothing is left over from the first.
        let shorter = [Bytes::from(vec![3u8; MIN_POOLED_LEN])];
        let second = join(&shorter, MIN_POOLED_LEN);
        assert_eq!(second.len(), MIN_POOLED_LEN);
        assert!(second.iter().all(|&byte| byte == 3));
        // Slices keep the buffer out of the pool until they go too.
        let tail = second.slice(MIN_POOLED_LEN - 4..);
        drop(second);
        assert_eq!(tail, Bytes::from_static(&[3, 3, 3, 3]));
    }

    #[test]
    fn the_pool_keeps_at_most_its_limit() {
        let payloads: Vec<Bytes> = (0..(MAX_POOLED_BYTES / MIN_POOLED_LEN) + 8)
            .map(|_| join(&[Bytes::from(vec![0u8; MIN_POOLED_LEN])], MIN_POOLED_LEN))
            .collect();
        drop(payloads);
        let idle = IDLE.lock().unwrap_or_else(PoisonError::into_inner);
        assert!(idle.1 <= MAX_POOLED_BYTES, "{} bytes idle", idle.1);
        assert_eq!(idle.1, idle.0.iter().map(Vec::capacity).sum::<usize>());
    }

    #[test]
    fn small_payloads_are_joined_plainly() {
        let parts = [Bytes::from_static(b"ab"), Bytes::from_static(b"cd")];
        assert_eq!(join(&parts, 4), Bytes::from_static(b"abcd"));
    }
}
