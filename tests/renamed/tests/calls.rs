//! The functions and service of a crate that renames `rpc-core` and has no
//! prelude, called over TCP.

use std::time::Duration;

use renamed_dependency::{EchoClient, EchoServer, Parrot, double};

#[tokio::test]
async fn calls_work_through_the_renamed_crate() {
    let server = rpc::Server::builder()
        .remote(double::function())
        .service(EchoServer::new(Parrot))
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let client = rpc::Client::new(server.local_addr().to_string());
    assert_eq!(double::call(&client, 21).await.unwrap(), 42);
    assert_eq!(double::NAME, "renamed_dependency::double");
    let echo = EchoClient::new(client);
    assert_eq!(echo.echo("hi".to_owned()).await.unwrap(), "hi");
    server.shutdown(Duration::from_secs(1)).await;
}
