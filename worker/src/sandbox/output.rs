//! Stdout and stderr of a job: kept in memory up to a limit. A write past
//! the limit keeps what fits, marks the output truncated and stops the
//! guest, so a job printing forever ends at once instead of burning its
//! whole time limit.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};

/// Writes at most this much per `check_write` permit.
const PERMIT: usize = 64 * 1024;

/// A bounded in-memory output. Clones share the same buffer.
#[derive(Debug, Clone)]
pub(crate) struct BoundedOutput {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug)]
struct Inner {
    bytes: BytesMut,
    limit: usize,
    truncated: bool,
}

impl BoundedOutput {
    pub(crate) fn new(limit: u64) -> BoundedOutput {
        BoundedOutput {
            inner: Arc::new(Mutex::new(Inner {
                bytes: BytesMut::new(),
                limit: usize::try_from(limit).unwrap_or(usize::MAX),
                truncated: false,
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        crate::lock(&self.inner)
    }

    /// Appends what fits; `false` if some of `bytes` did not.
    fn append(&self, bytes: &[u8]) -> bool {
        let mut inner = self.lock();
        let room = inner.limit.saturating_sub(inner.bytes.len());
        let taken = bytes.len().min(room);
        inner
            .bytes
            .extend_from_slice(bytes.get(..taken).unwrap_or_default());
        if taken < bytes.len() {
            inner.truncated = true;
        }
        !inner.truncated
    }

    /// Whether a write went past the limit.
    pub(crate) fn truncated(&self) -> bool {
        self.lock().truncated
    }

    /// What was written, up to the limit; taken out, as the job is over.
    pub(crate) fn take(&self) -> Bytes {
        std::mem::take(&mut self.lock().bytes).freeze()
    }

    /// The last `n` bytes written.
    pub(crate) fn tail(&self, n: usize) -> Bytes {
        let inner = self.lock();
        let start = inner.bytes.len().saturating_sub(n);
        Bytes::copy_from_slice(inner.bytes.get(start..).unwrap_or_default())
    }

    fn overflow(&self) -> StreamError {
        let limit = self.lock().limit;
        StreamError::trap(&format!("output limit of {limit} bytes reached"))
    }
}

impl IsTerminal for BoundedOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for BoundedOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for BoundedOutput {
    async fn ready(&mut self) {}
}

#[wasmtime_wasi::async_trait]
impl OutputStream for BoundedOutput {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        if self.append(&bytes) {
            Ok(())
        } else {
            Err(self.overflow())
        }
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        if self.truncated() {
            Err(self.overflow())
        } else {
            Ok(PERMIT)
        }
    }
}

impl AsyncWrite for BoundedOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.append(buf) {
            Poll::Ready(Ok(buf.len()))
        } else {
            Poll::Ready(Err(io::Error::other("output limit reached")))
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_what_fits_and_refuses_the_rest() {
        let mut out = BoundedOutput::new(10);
        out.write(Bytes::from_static(b"hello ")).unwrap();
        assert!(out.write(Bytes::from_static(b"world!")).is_err());
        assert!(out.truncated());
        assert!(out.check_write().is_err());
        assert_eq!(out.tail(4), &b"worl"[..]);
        assert_eq!(out.take(), &b"hello worl"[..]);
    }
}
