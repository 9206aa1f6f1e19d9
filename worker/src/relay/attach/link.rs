//! One supernode as a relayed worker sees it: measuring the round trip to
//! it, then attaching and opening the connections it asks for until it is
//! lost, refuses, or is retired.

use std::time::Duration;

use rpc_core::relay::{JoinedIntake, join};
use rpc_core::{Client, ClientConfig, RpcError};
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, timeout};

use super::AttachConfig;
use crate::functions::SupernodingClient;

/// How long measuring one supernode may take.
const MEASURE_TIMEOUT: Duration = Duration::from_secs(1);
/// How long the worker has to open a connection a supernode asked for.
const JOIN_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a directory that stood in as a supernode keeps being polled
/// after a supernode took the worker: clients that looked the old route up
/// still reach the worker meanwhile, and no poll is cut off with a
/// connection's ticket in it.
pub(super) const RETIRE_AFTER: Duration = Duration::from_secs(10);

/// What an attachment's task tells the attaching loop.
pub(super) enum Event {
    /// The supernode at this address took the worker.
    Attached(String),
    /// Serving the supernode at this address ended.
    Ended(String, Ended),
}

/// How serving one supernode ended.
pub(super) enum Ended {
    /// It refused the worker (full): try another.
    Refused(String),
    /// The connection to it failed: attach to another.
    Lost(String),
}

/// A supernode measured: its address, round trip, and the client that
/// measured it (kept, connected).
pub(super) struct Measured {
    pub(super) addr: String,
    pub(super) rtt: Duration,
    client: Client,
}

/// The round trip to each of `candidates` that answers, fastest first,
/// each measured by a client made from `config`.
pub(super) async fn measure(config: &AttachConfig, candidates: Vec<String>) -> Vec<Measured> {
    let measured = futures_util::future::join_all(candidates.into_iter().map(|addr| {
        let client = Client::with_config(
            addr.clone(),
            ClientConfig {
                max_reconnects: Some(0),
                // Polls wait up to 10 s for a connection to open.
                timeout: Some(Duration::from_secs(30)),
                keepalive: Some(config.heartbeat),
                ..config.client.clone()
            },
        );
        async move {
            // The first ping also connects; the second is the trip.
            let rtt = timeout(MEASURE_TIMEOUT, async {
                client.ping().await?;
                client.ping().await
            })
            .await;
            match rtt {
                Ok(Ok(rtt)) => Some(Measured { addr, rtt, client }),
                _ => None,
            }
        }
    }))
    .await;
    let mut ranked: Vec<Measured> = measured.into_iter().flatten().collect();
    ranked.sort_by_key(|measured| measured.rtt);
    ranked
}

/// Attaches to one supernode and opens the connections it asks for, until
/// it refuses or is lost (said on `events`), or until [`RETIRE_AFTER`]
/// past `retired` turning true (said to no one).
pub(super) async fn serve(
    name: String,
    intake: JoinedIntake,
    measured: Measured,
    events: mpsc::Sender<Event>,
    mut retired: watch::Receiver<bool>,
) {
    let dials = SupernodingClient::new(measured.client.clone());
    let dial_addr = measured
        .addr
        .strip_prefix("tls://")
        .unwrap_or(&measured.addr)
        .to_owned();
    let mut attached = false;
    let mut retiring: Option<Instant> = None;
    let ended = loop {
        if retiring.is_none() && *retired.borrow_and_update() {
            retiring = Some(Instant::now() + RETIRE_AFTER);
        }
        if retiring.is_some_and(|at| Instant::now() >= at) {
            tracing::debug!(supernode = %measured.addr, "stopped polling a directory that stood in");
            return;
        }
        let polled = tokio::select! {
            polled = dials.dials(name.clone()) => polled,
            // The attachment is gone (a retired task outlives it otherwise).
            () = events.closed() => return,
        };
        match polled {
            Ok(tickets) => {
                if !attached && !*retired.borrow() {
                    attached = true;
                    if events
                        .send(Event::Attached(measured.addr.clone()))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                for ticket in tickets {
                    let intake = intake.clone();
                    let dial_addr = dial_addr.clone();
                    tokio::spawn(async move {
                        let started = Instant::now();
                        match join(&dial_addr, ticket, JOIN_TIMEOUT).await {
                            Ok(stream) => {
                                intake.serve(stream).await;
                            }
                            Err(error) => tracing::warn!(
                                %error,
                                waited = ?started.elapsed(),
                                "could not open a connection the supernode asked for"
                            ),
                        }
                    });
                }
            }
            Err(RpcError::Application(refused)) if !attached => {
                break Ended::Refused(refused.to_string());
            }
            Err(error) => break Ended::Lost(error.to_string()),
        }
    };
    if !*retired.borrow() {
        let _ = events.send(Event::Ended(measured.addr, ended)).await;
    }
}

/// The address clients use for `name` through the supernode at
/// `supernode`: `tls://` in front if the worker speaks TLS (the supernode's
/// own scheme does not matter: it passes the bytes through).
pub(super) fn route_addr(name: &str, supernode: &str, serves_tls: bool) -> String {
    let supernode = supernode.strip_prefix("tls://").unwrap_or(supernode);
    if serves_tls {
        format!("tls://{name}@{supernode}")
    } else {
        format!("{name}@{supernode}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_route_says_tls_when_the_worker_speaks_it_whatever_the_supernode_speaks() {
        assert_eq!(route_addr("w1", "10.0.0.1:7000", false), "w1@10.0.0.1:7000");
        assert_eq!(
            route_addr("w1", "10.0.0.1:7000", true),
            "tls://w1@10.0.0.1:7000"
        );
        assert_eq!(
            route_addr("w1", "tls://relay.example:7000", true),
            "tls://w1@relay.example:7000"
        );
        assert_eq!(
            route_addr("w1", "tls://relay.example:7000", false),
            "w1@relay.example:7000"
        );
    }
}
