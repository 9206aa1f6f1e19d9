//! The guest side of the worker's typed calls: write a plain Rust function,
//! export it, build for `wasm32-wasip1`, and call it from the host with
//! `WorkerClient::call::<In, Out>(&module, "name", &input)`.
//!
//! ```
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Deserialize)]
//! pub struct Order { pub items: Vec<u32> }
//!
//! #[derive(Serialize)]
//! pub struct Total { pub sum: u64 }
//!
//! pub fn total(order: Order) -> Total {
//!     Total { sum: order.items.iter().map(|&i| u64::from(i)).sum() }
//! }
//!
//! // Exports `total` from the wasm module (and does nothing in a native
//! // build, where `total` stays an ordinary function).
//! rpc_guest::export!(total);
//! # fn main() {}
//! ```
//!
//! Build it as a `cdylib` for `wasm32-wasip1`. Input and output are
//! postcard-encoded; a panic (including input that does not decode as the
//! function's argument type) traps, and the host gets a `JobError::Trap`
//! with the panic message from the guest's stderr.
//!
//! # The ABI
//!
//! What this crate implements, for guests written in other languages:
//!
//! - the module exports its linear memory as `memory`;
//! - `rpc_alloc(len: i32) -> i32` returns a buffer of `len` bytes, into
//!   which the host writes the encoded input;
//! - each exported function `f(ptr: i32, len: i32) -> i64` reads its input
//!   from that buffer and returns where its encoded output is:
//!   `(out_ptr << 32) | out_len`;
//! - if the module exports `_initialize`, the host calls it first.
//!
//! Every call gets a fresh instance, so nothing needs freeing.

#[doc(hidden)]
pub mod __private {
    pub use postcard;
    pub use serde;
}

/// Exports functions `fn(In) -> Out` (`In: Deserialize`, `Out: Serialize`)
/// from a `wasm32` build under their own names; see the crate docs.
#[macro_export]
macro_rules! export {
    ($($name:ident),+ $(,)?) => {
        $(
            #[cfg(target_arch = "wasm32")]
            const _: () = {
                #[allow(unsafe_code)]
                #[unsafe(export_name = ::core::stringify!($name))]
                extern "C" fn __rpc_guest_export(ptr: i32, len: i32) -> i64 {
                    $crate::__call(ptr, len, $name)
                }
            };
        )+
    };
}

/// Gives the host a buffer of `len` bytes for a call's input.
#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code)]
// wasm32 addresses are 32 bits: the casts lose nothing.
#[allow(clippy::cast_possible_truncation, clippy::cast_possible_wrap)]
#[unsafe(no_mangle)]
pub extern "C" fn rpc_alloc(len: i32) -> i32 {
    let len = usize::try_from(len).unwrap_or(0);
    let buffer = Vec::<u8>::with_capacity(len).leak_capacity();
    buffer as i32
}

#[cfg(target_arch = "wasm32")]
trait LeakCapacity {
    fn leak_capacity(self) -> usize;
}

#[cfg(target_arch = "wasm32")]
impl LeakCapacity for Vec<u8> {
    /// The buffer's address; the buffer lives as long as the instance.
    fn leak_capacity(self) -> usize {
        let mut buffer = std::mem::ManuallyDrop::new(self);
        buffer.as_mut_ptr() as usize
    }
}

/// Decodes the input at `ptr`, calls `function`, encodes its output and
/// returns where it is. Used by [`export!`].
#[doc(hidden)]
#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code)]
#[allow(clippy::cast_possible_truncation, clippy::cast_possible_wrap)]
pub fn __call<In, Out, F>(ptr: i32, len: i32, function: F) -> i64
where
    In: serde::de::DeserializeOwned,
    Out: serde::Serialize,
    F: FnOnce(In) -> Out,
{
    let len = usize::try_from(len).unwrap_or(0);
    // SAFETY: the host called `rpc_alloc(len)`, which returned `ptr`, and
    // wrote `len` bytes there; the buffer is used once, here.
    let input = unsafe { std::slice::from_raw_parts(ptr as usize as *const u8, len) };
    let value: In = match postcard::from_bytes(input) {
        Ok(value) => value,
        Err(error) => panic!(
            "rpc-guest: the input did not decode as {}: {error}",
            std::any::type_name::<In>()
        ),
    };
    let output = match postcard::to_allocvec(&function(value)) {
        Ok(output) => output.leak(),
        Err(error) => panic!("rpc-guest: the output could not be encoded: {error}"),
    };
    ((output.as_ptr() as usize as i64) << 32) | output.len() as i64
}
