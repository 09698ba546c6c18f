//! Permission queries over scopes: `orders:read AND (billing:read OR billing:admin)`.
//!
//! Grammar (AND binds tighter than OR; keywords are case-insensitive):
//! ```text
//! query := or
//! or    := and ("OR" and)*
//! and   := atom ("AND" atom)*
//! atom  := SCOPE | "(" or ")"
//! ```

/// A parsed permission query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Permission {
    Scope(String),
    And(Vec<Permission>),
    Or(Vec<Permission>),
}

/// Why a query did not parse, with the byte offset where the problem starts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} at position {position}")]
pub struct PermissionError {
    pub position: usize,
    pub message: String,
}

/// Queries longer than this are refused (they come from untrusted callers).
pub const MAX_QUERY_LEN: usize = 4096;
/// Nesting deeper than this is refused, so parsing cannot exhaust the stack.
pub const MAX_DEPTH: usize = 32;

impl Permission {
    pub fn parse(query: &str) -> Result<Permission, PermissionError> {
        todo!("{query}")
    }

    /// Whether `granted` satisfies the query (wildcards as in `scope::grants`).
    pub fn evaluate<S: AsRef<str>>(&self, granted: &[S]) -> bool {
        todo!("{}", granted.len())
    }
}
