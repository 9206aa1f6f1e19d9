//! `#[remote]` functions and `#[service]` traits called over real TCP:
//! results, the functions' own errors, deadlines, roles, idempotent retries,
//! schema mismatches and introspection.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use rpc_core::{Client, ClientConfig, Context, RpcError, Server, remote, service};
use serde::{Deserialize, Serialize};

use crate::support::{eventually, proxy};

/// Adds two numbers.
#[remote]
async fn add(a: i64, b: i64) -> i64 {
    a + b
}

#[remote]
fn greet(name: String) -> String {
    format!("hello, {name}")
}

#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MathError {
    DivisionByZero,
}

#[remote(name = "math.divide")]
fn divide(a: i64, b: i64) -> Result<i64, MathError> {
    a.checked_div(b).ok_or(MathError::DivisionByZero)
}

#[remote]
async fn nothing() -> String {
    "nothing in, this out".to_owned()
}

static TOUCHED: AtomicU64 = AtomicU64::new(0);

#[remote]
fn touch(by: u64) {
    TOUCHED.fetch_add(by, Ordering::SeqCst);
}

#[remote]
#[allow(clippy::too_many_arguments)]
fn sum_of_eight(a: u8, b: u16, c: u32, d: u64, e: i8, f: i16, g: i32, h: i64) -> i64 {
    [
        i64::from(a),
        i64::from(b),
        i64::from(c),
        i64::try_from(d).unwrap_or(i64::MAX),
    ]
    .into_iter()
    .chain([i64::from(e), i64::from(f), i64::from(g), h])
    .sum()
}

#[remote]
fn r#type(r#in: u8) -> u8 {
    r#in.wrapping_add(1)
}

#[remote]
async fn whoami(context: Context, greeting: String) -> String {
    format!("{greeting}, {}", context.role().unwrap_or("stranger"))
}

#[remote(timeout_ms = 100)]
async fn nap(millis: u64) -> u64 {
    tokio::time::sleep(Duration::from_millis(millis)).await;
    millis
}

#[remote(roles = ["admin"])]
fn secret() -> String {
    "the admin's secret".to_owned()
}

static SLOW_ONCE_STARTED: AtomicUsize = AtomicUsize::new(0);

#[remote(idempotent)]
async fn slow_once(millis: u64) -> u64 {
    SLOW_ONCE_STARTED.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(millis)).await;
    millis
}

#[cfg(any())]
#[remote]
fn compiled_out(_: NotEvenAType) {}

/// Two builds of one function whose argument type changed in between.
mod v1 {
    #[rpc_core::remote(name = "shared.lookup")]
    pub fn lookup(id: String) -> u64 {
        id.len() as u64
    }
}
mod v2 {
    #[rpc_core::remote(name = "shared.lookup")]
    pub fn lookup(id: u64) -> u64 {
        id
    }
}

fn client_of(server: &Server) -> Client {
    Client::new(server.local_addr().to_string())
}

#[tokio::test]
async fn remote_functions_are_called_like_local_ones() {
    let server = Server::builder()
        .remote_all()
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let client = client_of(&server);

    assert_eq!(add::call(&client, 2, 3).await.unwrap(), 5);
    assert_eq!(add(2, 3).await, 5, "still callable locally");
    assert_eq!(
        greet::call(&client, "ada".into()).await.unwrap(),
        "hello, ada"
    );
    assert_eq!(divide::call(&client, 7, 2).await.unwrap(), 3);
    let error = divide::call(&client, 1, 0).await.unwrap_err();
    assert!(
        matches!(error, RpcError::Application(MathError::DivisionByZero)),
        "{error:?}"
    );
    assert_eq!(
        nothing::call(&client).await.unwrap(),
        "nothing in, this out"
    );
    touch::call(&client, 5).await.unwrap();
    assert_eq!(TOUCHED.load(Ordering::SeqCst), 5);
    assert_eq!(
        sum_of_eight::call(&client, 1, 2, 3, 4, -5, 6, 7, 8)
            .await
            .unwrap(),
        26
    );
    assert_eq!(r#type::call(&client, 41).await.unwrap(), 42);
    assert_eq!(
        whoami::call(&client, "hi".into()).await.unwrap(),
        "hi, stranger"
    );

    // Names: the path by default, or the one given.
    assert_eq!(add::NAME, "all::macros::add");
    assert_eq!(divide::NAME, "math.divide");
    assert_eq!(r#type::NAME, "all::macros::r#type");
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn introspection_lists_remote_functions_with_docs_and_hashes() {
    let server = Server::builder()
        .remote_all()
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let functions = client_of(&server).describe().await.unwrap();
    let add_info = functions
        .iter()
        .find(|info| info.name == add::NAME)
        .expect("add is listed");
    assert_eq!(add_info.description, "Adds two numbers.");
    assert_eq!(add_info.schema_hash, Some(add::SCHEMA_HASH));
    let secret_info = functions
        .iter()
        .find(|info| info.name == secret::NAME)
        .expect("secret is listed");
    assert_eq!(secret_info.roles, Some(vec!["admin".to_owned()]));
    assert!(
        functions
            .iter()
            .all(|info| !info.name.contains("compiled_out")),
        "a function compiled out by #[cfg] is not served"
    );
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn only_explicitly_registered_functions_are_served() {
    let server = Server::builder()
        .remote(add::function())
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let client = client_of(&server);
    assert_eq!(add::call(&client, 1, 1).await.unwrap(), 2);
    let error = greet::call(&client, "x".into()).await.unwrap_err();
    assert!(matches!(error, RpcError::NotFound(_)), "{error:?}");
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn the_attributes_deadline_applies_unless_the_caller_gives_another() {
    let server = Server::builder()
        .remote(nap::function())
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let client = client_of(&server);
    let error = nap::call(&client, 2_000).await.unwrap_err();
    assert!(matches!(error, RpcError::DeadlineExceeded), "{error:?}");
    let options = nap::options().timeout(Duration::from_secs(5));
    assert_eq!(nap::call_with(&client, options, 150).await.unwrap(), 150);
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn roles_restrict_who_may_call() {
    let server = Server::builder()
        .token("admin-token", "admin")
        .token("guest-token", "guest")
        .remote_all()
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let with_token = |token: Option<&str>| {
        Client::with_config(
            server.local_addr().to_string(),
            ClientConfig {
                token: token.map(str::to_owned),
                ..ClientConfig::default()
            },
        )
    };
    for token in [None, Some("guest-token")] {
        let error = secret::call(&with_token(token)).await.unwrap_err();
        assert!(
            matches!(error, RpcError::Forbidden(_)),
            "{token:?}: {error:?}"
        );
    }
    let admin = with_token(Some("admin-token"));
    assert_eq!(secret::call(&admin).await.unwrap(), "the admin's secret");
    assert_eq!(
        whoami::call(&admin, "welcome".into()).await.unwrap(),
        "welcome, admin"
    );
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn an_idempotent_remote_function_is_retried_and_runs_once() {
    let server = Server::builder()
        .remote(slow_once::function())
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let (proxy_addr, cut) = proxy(server.local_addr()).await;
    let client = Client::new(proxy_addr.to_string());
    let call = tokio::spawn({
        let client = client.clone();
        async move { slow_once::call(&client, 400).await }
    });
    eventually("the call to start", || {
        SLOW_ONCE_STARTED.load(Ordering::SeqCst) == 1
    })
    .await;
    cut.send_modify(|cuts| *cuts += 1);
    assert_eq!(
        call.await.unwrap().unwrap(),
        400,
        "the retry got the result"
    );
    assert_eq!(SLOW_ONCE_STARTED.load(Ordering::SeqCst), 1, "it ran once");
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_client_built_against_other_types_gets_incompatible() {
    assert_ne!(v1::lookup::SCHEMA_HASH, v2::lookup::SCHEMA_HASH);
    let server = Server::builder()
        .remote(v2::lookup::function())
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let client = client_of(&server);
    assert_eq!(v2::lookup::call(&client, 7).await.unwrap(), 7);
    let error = v1::lookup::call(&client, "seven".into()).await.unwrap_err();
    assert!(matches!(error, RpcError::Incompatible(_)), "{error:?}");
    server.shutdown(Duration::from_secs(1)).await;
}

/// A key-value service with state shared by all calls.
#[service]
trait Inventory {
    /// Adds `count` items of `item`, returning the new stock.
    async fn restock(&self, item: String, count: u32) -> u32;

    /// Takes `count` items, if there are enough.
    #[rpc(idempotent, timeout_ms = 1_000)]
    async fn take(&self, item: String, count: u32) -> Result<u32, StockError>;

    /// Only for auditors.
    #[rpc(roles = ["auditor"])]
    fn audit(&self, context: Context) -> String;

    /// Sleeps, to test deadlines.
    #[rpc(timeout_ms = 100)]
    async fn stall(&self, millis: u64);
}

#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StockError {
    NotEnough { have: u32 },
}

#[derive(Default)]
struct Shelf(std::sync::Mutex<std::collections::HashMap<String, u32>>);

impl Inventory for Shelf {
    async fn restock(&self, item: String, count: u32) -> u32 {
        let mut shelf = self.0.lock().unwrap();
        let stock = shelf.entry(item).or_default();
        *stock += count;
        *stock
    }

    async fn take(&self, item: String, count: u32) -> Result<u32, StockError> {
        let mut shelf = self.0.lock().unwrap();
        let stock = shelf.entry(item).or_default();
        if *stock < count {
            return Err(StockError::NotEnough { have: *stock });
        }
        *stock -= count;
        Ok(*stock)
    }

    fn audit(&self, context: Context) -> String {
        format!(
            "{} kinds of item, seen by {}",
            self.0.lock().unwrap().len(),
            context.role().unwrap_or("nobody")
        )
    }

    async fn stall(&self, millis: u64) {
        tokio::time::sleep(Duration::from_millis(millis)).await;
    }
}

#[tokio::test]
async fn a_service_is_served_and_called_through_its_typed_client() {
    let shelf = Arc::new(Shelf::default());
    let server = Server::builder()
        .token("clerk", "clerk")
        .token("audit", "auditor")
        .service(InventoryServer::from_arc(Arc::clone(&shelf)))
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let with_token = |token: &str| {
        Client::with_config(
            server.local_addr().to_string(),
            ClientConfig {
                token: Some(token.to_owned()),
                ..ClientConfig::default()
            },
        )
    };
    let inventory = InventoryClient::new(with_token("clerk"));
    assert_eq!(inventory.restock("bolt".into(), 10).await.unwrap(), 10);
    assert_eq!(inventory.take("bolt".into(), 4).await.unwrap(), 6);
    let error = inventory.take("bolt".into(), 7).await.unwrap_err();
    assert!(
        matches!(
            error,
            RpcError::Application(StockError::NotEnough { have: 6 })
        ),
        "{error:?}"
    );
    assert_eq!(shelf.0.lock().unwrap()["bolt"], 6, "state is the server's");

    let error = inventory.audit().await.unwrap_err();
    assert!(matches!(error, RpcError::Forbidden(_)), "{error:?}");
    let auditor = InventoryClient::new(with_token("audit"));
    assert_eq!(
        auditor.audit().await.unwrap(),
        "1 kinds of item, seen by auditor"
    );

    let error = inventory.stall(2_000).await.unwrap_err();
    assert!(matches!(error, RpcError::DeadlineExceeded), "{error:?}");

    let functions = inventory.client().describe().await.unwrap();
    let names: Vec<&str> = functions.iter().map(|info| info.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "all::macros::Inventory::audit",
            "all::macros::Inventory::restock",
            "all::macros::Inventory::stall",
            "all::macros::Inventory::take",
        ]
    );
    let restock = &functions[1];
    assert_eq!(
        restock.description,
        "Adds `count` items of `item`, returning the new stock."
    );
    assert!(restock.schema_hash.is_some());
    server.shutdown(Duration::from_secs(1)).await;
}

/// The same service name, built with another argument type.
mod inventory_v2 {
    // Only its client is used here, as in a program that only calls.
    #![allow(dead_code)]

    #[rpc_core::service(name = "all::macros::Inventory")]
    pub trait Inventory {
        async fn restock(&self, item: u64, count: u32) -> u32;
    }
}

#[tokio::test]
async fn a_service_client_built_against_other_types_gets_incompatible() {
    let server = Server::builder()
        .service(InventoryServer::new(Shelf::default()))
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let stale = inventory_v2::InventoryClient::new(client_of(&server));
    let error = stale.restock(1, 1).await.unwrap_err();
    assert!(matches!(error, RpcError::Incompatible(_)), "{error:?}");
    server.shutdown(Duration::from_secs(1)).await;
}

/// A request type that names the function it calls.
#[derive(Debug, Serialize, Deserialize, rpc_core::Request)]
#[request(name = "stock.reserve", response = u32, error = StockError, idempotent)]
struct Reserve {
    item: String,
    count: u32,
}

#[derive(Debug, Serialize, Deserialize, rpc_core::Request)]
#[request(response = String, roles = ["auditor"])]
enum Report {
    Summary,
    Item { name: String },
}

/// `Reserve` as an older client built it, with another field type.
mod reserve_v0 {
    use serde::{Deserialize, Serialize};

    #[derive(Debug, Serialize, Deserialize, rpc_core::Request)]
    #[request(name = "stock.reserve", response = u32, error = super::StockError, idempotent)]
    pub struct Reserve {
        pub item: String,
        pub count: u64,
    }
}

#[tokio::test]
async fn request_types_are_served_by_handlers_and_sent_by_clients() {
    use rpc_core::Request;

    let server = Server::builder()
        .token("audit", "auditor")
        .token("clerk", "clerk")
        .handle(|_, reserve: Reserve| async move {
            if reserve.count > 10 {
                Err(StockError::NotEnough { have: 10 })
            } else {
                Ok(10 - reserve.count)
            }
        })
        .handle(|context: Context, report: Report| async move {
            Ok(match report {
                Report::Summary => format!("summary for {}", context.role().unwrap_or("?")),
                Report::Item { name } => format!("report on {name}"),
            })
        })
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let with_token = |token: &str| {
        Client::with_config(
            server.local_addr().to_string(),
            ClientConfig {
                token: Some(token.to_owned()),
                ..ClientConfig::default()
            },
        )
    };
    let clerk = with_token("clerk");
    let reserve = Reserve {
        item: "bolt".into(),
        count: 3,
    };
    assert_eq!(reserve.call(&clerk).await.unwrap(), 7);
    let too_many = Reserve {
        item: "bolt".into(),
        count: 11,
    };
    let error = too_many.call(&clerk).await.unwrap_err();
    assert!(
        matches!(
            error,
            RpcError::Application(StockError::NotEnough { have: 10 })
        ),
        "{error:?}"
    );
    assert_eq!(Reserve::NAME, "stock.reserve");

    // Roles from the attribute.
    let error = Report::Summary.call(&clerk).await.unwrap_err();
    assert!(matches!(error, RpcError::Forbidden(_)), "{error:?}");
    let auditor = with_token("audit");
    assert_eq!(
        Report::Summary.call(&auditor).await.unwrap(),
        "summary for auditor"
    );
    let item = Report::Item { name: "nut".into() };
    assert_eq!(item.call(&auditor).await.unwrap(), "report on nut");
    assert_eq!(Report::NAME, "all::macros::Report");

    // A field's type changed: incompatible, not garbage.
    assert_ne!(reserve_v0::Reserve::SCHEMA_HASH, Reserve::SCHEMA_HASH);
    let stale = reserve_v0::Reserve {
        item: "bolt".into(),
        count: 1,
    };
    let error = stale.call(&clerk).await.unwrap_err();
    assert!(matches!(error, RpcError::Incompatible(_)), "{error:?}");
    server.shutdown(Duration::from_secs(1)).await;
}

/// Roles kept in one constant, as a crate with many functions would.
const TAKERS: [&str; 2] = ["taker", "admin"];

#[service(name = "counter")]
trait Counter {
    /// Takes `n` items: its own error for an odd count, the server's
    /// condition (429) for more than it holds.
    #[rpc(roles = TAKERS)]
    async fn take(&self, n: u32) -> Result<u32, rpc_core::Failure<String>>;
}

struct TenItems;

impl Counter for TenItems {
    async fn take(&self, n: u32) -> Result<u32, rpc_core::Failure<String>> {
        if n > 10 {
            return Err(rpc_core::Failure::Status(
                rpc_core::StatusCode::RESOURCE_EXHAUSTED,
                format!("only 10 on the shelf, not {n}"),
            ));
        }
        if n % 2 == 1 {
            Err("odd counts are not sold".to_owned())?;
        }
        Ok(10 - n)
    }
}

#[tokio::test]
async fn a_service_method_answers_its_own_error_or_a_status_and_takes_roles_from_a_constant() {
    let server = Server::builder()
        .token("taker-token", "taker")
        .token("other-token", "viewer")
        .service(CounterServer::new(TenItems))
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let with_token = |token: &str| {
        CounterClient::new(Client::with_config(
            server.local_addr().to_string(),
            ClientConfig {
                token: Some(token.into()),
                ..ClientConfig::default()
            },
        ))
    };
    let stock = with_token("taker-token");
    assert_eq!(stock.take(4).await.unwrap(), 6);
    let error = stock.take(3).await.unwrap_err();
    assert!(
        matches!(&error, RpcError::Application(message) if message == "odd counts are not sold"),
        "{error:?}"
    );
    let error = stock.take(11).await.unwrap_err();
    assert!(
        matches!(&error, RpcError::ResourceExhausted(message) if message.contains("only 10")),
        "{error:?}"
    );
    // Per-call options keep the method's schema hash.
    let options = rpc_core::CallOptions::new().timeout(Duration::from_secs(5));
    assert_eq!(stock.take_with(options, 2).await.unwrap(), 8);
    // A role outside the constant may not call.
    let error = with_token("other-token").take(2).await.unwrap_err();
    assert!(matches!(error, RpcError::Forbidden(_)), "{error:?}");
    server.shutdown(Duration::from_secs(1)).await;
}
