//! Introspection (PROTOCOL.md section 13): the reserved function every
//! server answers with the list of the functions it serves.

use serde::{Deserialize, Serialize};

/// The name of the built-in function that lists a server's functions.
pub const DESCRIBE_METHOD: &str = "rpc.describe";

/// One function a server offers, as listed by [`DESCRIBE_METHOD`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionInfo {
    /// The name callers use.
    pub name: String,
    /// The hash of its name and types, if registered with one.
    pub schema_hash: Option<u64>,
    /// The roles allowed to call it; `None` means every caller.
    pub roles: Option<Vec<String>>,
    /// What it does.
    pub description: String,
}
