//! A JID as the program keeps it: bare (any resource dropped) and lower-case, so that the
//! access rules, the quotas and the records of one account meet the same string however a
//! request spells it. Used by the slot API (`jid=`), the JWT protocol (the token's `sub`) and
//! the admin commands (`--jid`). Pure: it checks the shape only, not whether the account exists.

use crate::refusal::Refusal;

/// The bare JID (any resource dropped), lower-cased (node and domain of a JID compare
/// case-insensitively, so `Evil@example.org` must meet the rules of `evil@example.org`),
/// refused when it is not `[node@]domain` in shape.
pub fn bare_jid(jid: &str) -> Result<String, Refusal> {
    let bare = jid.split('/').next().unwrap_or("").trim();
    let bad = bare.is_empty()
        || bare.len() > 3071
        || bare.chars().any(|c| c.is_whitespace() || c.is_control())
        || bare.starts_with('@')
        || bare.ends_with('@')
        || bare.matches('@').count() > 1;
    if bad {
        return Err(Refusal::bad_request(format!("invalid jid {jid:?}")));
    }
    Ok(bare.to_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_dropped() {
        assert_eq!(bare_jid("a@b.c/res").unwrap(), "a@b.c");
        assert_eq!(bare_jid("a@b.c/res/with/slashes").unwrap(), "a@b.c");
    }

    #[test]
    fn case_folded() {
        assert_eq!(
            bare_jid("Evil@Example.ORG/Res").unwrap(),
            "evil@example.org"
        );
    }

    #[test]
    fn domain_alone() {
        assert_eq!(bare_jid("b.c").unwrap(), "b.c");
    }

    #[test]
    fn invalid_shapes() {
        for jid in ["", "/res", "a b@c", "@c", "a@", "a@b@c", "a@b\u{7}c"] {
            assert!(bare_jid(jid).is_err(), "{jid:?}");
        }
    }
}
