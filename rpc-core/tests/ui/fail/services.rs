use rpc_core::service;

#[service]
trait Misused {
    /// Collides with the generated `MisusedClient::new`.
    async fn new(&self) -> u8;
    async fn client(&self) -> u8;
    async fn by_value(self);
    async fn by_mut(&mut self);
    async fn no_receiver();
    async fn borrowed(&self, name: &str);
    #[rpc(retries = 2)]
    async fn unknown_option(&self);
    const LIMIT: u8;
}

#[service(version = 2)]
trait UnknownServiceOption {
    async fn get(&self);
}

#[service]
trait Generic<T> {
    async fn get(&self);
}

fn main() {}
