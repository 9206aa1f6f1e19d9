//! Addresses with several routes to one server, and choosing among them:
//! every route is tried at once and the first whose handshake completes is
//! kept, so the route used is the fastest measured end to end (client to
//! supernode to worker), not the one a list happens to name first.

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;

use crate::client::ClientConfig;
use crate::client::connection::Connection;
use crate::error::RpcError;

/// Routes one address may name at most. An address can come from a
/// directory, written by a peer: a longer list is refused rather than
/// dialled.
pub const MAX_ROUTES_PER_ADDRESS: usize = 8;

/// The routes `addr` names: itself, or the parts of a comma-separated list
/// (`w1@10.0.0.1:7000,w1@10.0.0.2:7000`). Every route is a whole address;
/// they must all ask for TLS (`tls://`) or none.
///
/// # Errors
///
/// [`RpcError::BadRequest`] for an empty route, more than [`MAX_ROUTES_PER_ADDRESS`],
/// or routes that differ on TLS (a plaintext route beside a TLS one would
/// let whoever slows the TLS route down read the traffic).
pub(crate) fn routes(addr: &str) -> Result<Vec<&str>, RpcError> {
    let routes: Vec<&str> = addr.split(',').map(str::trim).collect();
    if routes.len() > MAX_ROUTES_PER_ADDRESS {
        return Err(RpcError::BadRequest(format!(
            "the address names {} routes, more than the {MAX_ROUTES_PER_ADDRESS} a client tries",
            routes.len()
        )));
    }
    if routes.iter().any(|route| route.is_empty()) {
        return Err(RpcError::BadRequest(format!(
            "the address `{addr}` has an empty route: separate whole addresses with single commas"
        )));
    }
    let tls = |route: &&str| route.starts_with(super::connection::TLS_SCHEME);
    if routes.iter().any(tls) && !routes.iter().all(tls) {
        return Err(RpcError::BadRequest(format!(
            "the address `{addr}` mixes tls:// routes with plaintext ones: give every route \
             tls://, or none"
        )));
    }
    Ok(routes)
}

/// Opens a connection over the fastest of `addr`'s routes: all are dialled
/// at once, the first to complete its handshake wins and the others are
/// dropped (closed). [`Connection::route`] tells which route won.
///
/// # Errors
///
/// With one route, that route's error. With several, once all have
/// failed: a failure that retrying cannot mend (TLS, a refused token) if
/// one route had it, else [`RpcError::Unavailable`] naming each route's
/// failure.
pub(super) async fn open_fastest(
    addr: &str,
    config: &ClientConfig,
) -> Result<Connection, RpcError> {
    let routes = routes(addr)?;
    if let [route] = routes.as_slice() {
        return Connection::open(route, config).await;
    }
    let mut racing: FuturesUnordered<_> = routes
        .iter()
        .map(|route| async move { (*route, Connection::open(route, config).await) })
        .collect();
    let mut lasting = None;
    let mut failures = Vec::new();
    while let Some((route, opened)) = racing.next().await {
        match opened {
            Ok(connection) => {
                tracing::debug!(%addr, %route, "took the route whose handshake completed first");
                return Ok(connection);
            }
            Err(RpcError::Unavailable(reason)) => failures.push(format!("{route}: {reason}")),
            Err(error) => {
                failures.push(format!("{route}: {error}"));
                lasting.get_or_insert(error);
            }
        }
    }
    Err(lasting.unwrap_or_else(|| {
        RpcError::Unavailable(format!("no route answered ({})", failures.join("; ")))
    }))
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use super::*;
    use crate::{Client, Server};

    /// A server on loopback that answers `who` with `name`.
    async fn server_named(name: &'static str) -> Server {
        Server::builder()
            .function(
                "who",
                move |()| async move { Ok::<_, crate::Infallible>(name) },
            )
            .bind("127.0.0.1:0")
            .await
            .unwrap()
    }

    /// A proxy to `target` that holds every piece of data `delay` in each
    /// direction.
    async fn delay_proxy(target: SocketAddr, delay: Duration) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let Ok(outbound) = TcpStream::connect(target).await else {
                    continue;
                };
                let (a_read, a_write) = inbound.into_split();
                let (b_read, b_write) = outbound.into_split();
                tokio::spawn(delayed_copy(a_read, b_write, delay));
                tokio::spawn(delayed_copy(b_read, a_write, delay));
            }
        });
        addr
    }

    async fn delayed_copy(
        mut from: tokio::net::tcp::OwnedReadHalf,
        mut to: tokio::net::tcp::OwnedWriteHalf,
        delay: Duration,
    ) {
        let mut buf = vec![0u8; 64 << 10];
        while let Ok(n @ 1..) = from.read(&mut buf).await {
            tokio::time::sleep(delay).await;
            if to.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = to.shutdown().await;
    }

    fn client_of(addr: String) -> Client {
        Client::with_config(
            addr,
            ClientConfig {
                max_reconnects: Some(0),
                connect_timeout: Duration::from_secs(30),
                ..ClientConfig::default()
            },
        )
    }

    #[tokio::test]
    async fn the_fastest_route_is_used_whichever_the_list_names_first() {
        let slow = server_named("slow").await;
        let fast = server_named("fast").await;
        // 20 ms more per round trip, several round trips per handshake.
        let slow_route = delay_proxy(slow.local_addr(), Duration::from_millis(10))
            .await
            .to_string();
        let fast_route = fast.local_addr().to_string();
        for addr in [
            format!("{slow_route},{fast_route}"),
            format!("{fast_route},{slow_route}"),
        ] {
            let client = client_of(addr.clone());
            assert_eq!(
                client.route(),
                None,
                "nothing is open before the first call"
            );
            let who: String = client.call("who", &()).await.unwrap();
            assert_eq!(who, "fast", "{addr}");
            assert_eq!(client.route().as_deref(), Some(fast_route.as_str()));
            assert_eq!(client.addr(), addr);
        }
        slow.shutdown(Duration::ZERO).await;
        fast.shutdown(Duration::ZERO).await;
    }

    #[tokio::test]
    async fn when_the_route_in_use_dies_the_next_call_takes_another() {
        let slow = server_named("slow").await;
        let fast = server_named("fast").await;
        let slow_route = delay_proxy(slow.local_addr(), Duration::from_millis(10))
            .await
            .to_string();
        let client = client_of(format!("{slow_route},{}", fast.local_addr()));
        let who: String = client.call("who", &()).await.unwrap();
        assert_eq!(who, "fast");
        fast.shutdown(Duration::ZERO).await;
        let who: String = client.call("who", &()).await.unwrap();
        assert_eq!(who, "slow");
        assert_eq!(client.route(), Some(slow_route));
        slow.shutdown(Duration::ZERO).await;
    }

    #[tokio::test]
    async fn a_route_that_never_answers_does_not_hold_up_one_that_does() {
        // Accepts connections and says nothing: a black hole.
        let tarpit = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tarpit_addr = tarpit.local_addr().unwrap();
        let held = tokio::spawn(async move {
            let mut sockets = Vec::new();
            while let Ok((socket, _)) = tarpit.accept().await {
                sockets.push(socket);
            }
        });
        let good = server_named("good").await;
        let client = client_of(format!("{tarpit_addr},{}", good.local_addr()));
        // Far below the 30 s connect timeout the tarpit would cost alone.
        let who: String = tokio::time::timeout(Duration::from_secs(10), client.call("who", &()))
            .await
            .expect("answered over the good route without waiting for the tarpit")
            .unwrap();
        assert_eq!(who, "good");
        held.abort();
        good.shutdown(Duration::ZERO).await;
    }

    #[tokio::test]
    async fn with_every_route_down_the_error_names_each() {
        let mut dead = Vec::new();
        for _ in 0..2 {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            dead.push(listener.local_addr().unwrap().to_string());
        }
        let client = client_of(dead.join(","));
        let Err(RpcError::Unavailable(message)) = client.call::<_, String>("who", &()).await else {
            panic!("expected unavailable");
        };
        for route in &dead {
            assert!(message.contains(route.as_str()), "{message}");
        }
    }

    #[tokio::test]
    async fn a_malformed_list_fails_the_call_at_once_as_the_callers_error() {
        let client = client_of("127.0.0.1:1,,127.0.0.1:2".into());
        let error = client.call::<_, String>("who", &()).await.unwrap_err();
        assert!(matches!(error, RpcError::BadRequest(_)), "{error:?}");
    }

    #[test]
    fn a_plain_address_is_one_route() {
        assert_eq!(routes("10.0.0.1:7000").unwrap(), ["10.0.0.1:7000"]);
        assert_eq!(
            routes("tls://w1@relay:7000").unwrap(),
            ["tls://w1@relay:7000"]
        );
    }

    #[test]
    fn a_list_names_each_route_whole() {
        assert_eq!(
            routes("w1@10.0.0.1:7000, w1@10.0.0.2:7000,10.0.0.9:7070").unwrap(),
            ["w1@10.0.0.1:7000", "w1@10.0.0.2:7000", "10.0.0.9:7070"]
        );
    }

    #[test]
    fn hostile_lists_are_refused_before_anything_is_dialled() {
        for bad in ["", ",", "a:1,,b:2", "a:1,"] {
            assert!(
                matches!(routes(bad), Err(RpcError::BadRequest(_))),
                "{bad:?} was accepted"
            );
        }
        let many = ["w@10.0.0.1:1"; MAX_ROUTES_PER_ADDRESS + 1].join(",");
        assert!(matches!(routes(&many), Err(RpcError::BadRequest(_))));
        let most = ["w@10.0.0.1:1"; MAX_ROUTES_PER_ADDRESS].join(",");
        assert_eq!(routes(&most).unwrap().len(), MAX_ROUTES_PER_ADDRESS);
    }

    #[test]
    fn routes_cannot_mix_tls_with_plaintext() {
        let Err(RpcError::BadRequest(message)) = routes("tls://w1@a:1,w1@b:2") else {
            panic!("a plaintext route beside a TLS one was accepted");
        };
        assert!(message.contains("mixes tls://"), "{message}");
        assert!(routes("tls://w1@a:1,tls://w1@b:2").is_ok());
    }
}
