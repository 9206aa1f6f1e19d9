use rpc_core::remote;

#[remote]
fn borrowed(name: &str, items: &[u8]) -> usize {
    name.len() + items.len()
}

#[remote]
fn returns_a_reference() -> &'static str {
    "static"
}

#[remote]
fn lifetime_inside(text: std::borrow::Cow<'static, str>) -> usize {
    text.len()
}

fn main() {}
