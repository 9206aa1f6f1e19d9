//! Shared-secret tokens, each granting an access role, checked in constant
//! time.

use crate::wire::ContentHash;

/// The tokens a server accepts.
#[derive(Clone, Debug, Default)]
pub(crate) struct Tokens {
    /// SHA-256 of each token, and the role it grants. Hashing first makes
    /// every comparison 32 bytes long, whatever the tokens' lengths.
    grants: Vec<(ContentHash, String)>,
}

/// What a presented token is worth.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// No tokens are configured and none was presented: anonymous access.
    Anonymous,
    /// The token grants this role; `principal` names the token (a prefix
    /// of its hash) without revealing it.
    Role { role: String, principal: [u8; 8] },
    /// Tokens are required and this one is missing or unknown.
    Refused,
}

impl Tokens {
    pub(crate) fn add(&mut self, token: &str, role: String) {
        self.grants.push((ContentHash::of(token.as_bytes()), role));
    }

    /// Checks `token` against every configured token, always comparing all
    /// of them, in time that does not depend on where they differ.
    pub(crate) fn check(&self, token: Option<&str>) -> Verdict {
        let Some(token) = token else {
            return if self.grants.is_empty() {
                Verdict::Anonymous
            } else {
                Verdict::Refused
            };
        };
        let presented = ContentHash::of(token.as_bytes());
        let mut granted = None;
        for (hash, role) in &self.grants {
            if constant_time_eq(hash.as_bytes(), presented.as_bytes()) && granted.is_none() {
                granted = Some(role);
            }
        }
        let principal = presented
            .as_bytes()
            .first_chunk()
            .copied()
            .unwrap_or([0; 8]);
        match granted {
            Some(role) => Verdict::Role {
                role: role.clone(),
                principal,
            },
            None => Verdict::Refused,
        }
    }
}

/// Compares two digests without branching on their contents.
fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let difference = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(difference) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_grant_their_roles() {
        let mut tokens = Tokens::default();
        tokens.add("alpha", "admin".into());
        tokens.add("beta", "reader".into());
        let role = |token| match tokens.check(Some(token)) {
            Verdict::Role { role, .. } => Some(role),
            _ => None,
        };
        assert_eq!(role("alpha").as_deref(), Some("admin"));
        assert_eq!(role("beta").as_deref(), Some("reader"));
        let principal = |token| match tokens.check(Some(token)) {
            Verdict::Role { principal, .. } => principal,
            _ => [0; 8],
        };
        assert_ne!(
            principal("alpha"),
            principal("beta"),
            "tokens are told apart"
        );
        assert_eq!(tokens.check(Some("alph")), Verdict::Refused);
        assert_eq!(tokens.check(Some("")), Verdict::Refused);
        assert_eq!(tokens.check(None), Verdict::Refused);
    }

    #[test]
    fn without_tokens_everyone_is_anonymous_but_tokens_are_refused() {
        let tokens = Tokens::default();
        assert_eq!(tokens.check(None), Verdict::Anonymous);
        assert_eq!(tokens.check(Some("guess")), Verdict::Refused);
    }
}
