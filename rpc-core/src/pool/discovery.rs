//! Keeping a pool's address list current: a static list, or a name that
//! resolves to many addresses (a Kubernetes headless service, Consul DNS),
//! resolved again periodically.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Weak;
use std::time::Duration;

use super::{Inner, Pool};

/// The future a [`Resolver`] returns.
pub type ResolveFuture<'a> = Pin<Box<dyn Future<Output = io::Result<Vec<String>>> + Send + 'a>>;

/// Where a pool's servers are: asked again every interval by
/// [`Pool::follow`].
pub trait Resolver: Send + Sync + 'static {
    /// The servers' addresses now (`host:port`).
    fn resolve(&self) -> ResolveFuture<'_>;
}

/// Resolves `host:port` through the system resolver (DNS): every address
/// the name has becomes a server.
#[derive(Debug, Clone)]
pub struct DnsResolver {
    name: String,
}

impl DnsResolver {
    /// Resolves `name`, a `host:port` such as
    /// `workers.default.svc.cluster.local:7070`.
    pub fn new(name: impl Into<String>) -> DnsResolver {
        DnsResolver { name: name.into() }
    }
}

impl Resolver for DnsResolver {
    fn resolve(&self) -> ResolveFuture<'_> {
        Box::pin(async move {
            let mut addrs: Vec<String> = tokio::net::lookup_host(&self.name)
                .await?
                .map(|addr| addr.to_string())
                .collect();
            addrs.sort();
            addrs.dedup();
            Ok(addrs)
        })
    }
}

impl Pool {
    /// Keeps the pool's servers those that `resolver` names, asking it now
    /// and then every `interval`, until the pool is dropped. A failed or
    /// empty answer keeps the previous list (a resolver hiccup must not
    /// empty the pool). Must be called within a tokio runtime.
    pub fn follow(&self, resolver: impl Resolver, interval: Duration) {
        let pool = std::sync::Arc::downgrade(&self.inner);
        tokio::spawn(follow(pool, resolver, interval));
    }
}

async fn follow(pool: Weak<Inner>, resolver: impl Resolver, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let answer = resolver.resolve().await;
        let Some(inner) = pool.upgrade() else { return };
        match answer {
            Ok(addrs) if !addrs.is_empty() => Pool { inner }.set_addresses(addrs),
            Ok(_) => tracing::warn!("the resolver named no servers; keeping the current ones"),
            Err(error) => {
                tracing::warn!(%error, "resolving the pool's servers failed; keeping the current ones");
            }
        }
    }
}
