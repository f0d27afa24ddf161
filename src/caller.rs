//! Who may call the slot API (`slot`, `max_size`) and read `metrics`: the XMPP server, known by
//! its address (`[slot_api] allow_from`) and, when one is configured, the secret it presents.
//! It decides nothing about uploads: a PUT is authorized by its own protocol (`slot`, `hmac`,
//! `jwt`), never by who sends it.

use std::net::IpAddr;

use crate::config::SlotApiAccess;
use crate::crypto::constant_time_eq;
use crate::name::query_value;
use crate::refusal::Refusal;
use crate::request::Request;

/// Only the XMPP server may ask for slots (or read `metrics`): its address must be allowed, and
/// the secret, when one is configured, must be presented (`secret=` or `Authorization: Bearer`).
/// `query` is the request's query, parsed once by the caller.
pub fn check_caller(
    access: &SlotApiAccess,
    req: &Request,
    query: &[(String, String)],
) -> Result<(), Refusal> {
    if !access.allow_from.is_empty() {
        let addr = req
            .remote_addr
            .as_deref()
            .and_then(|a| a.parse::<IpAddr>().ok());
        let allowed = addr.is_some_and(|addr| {
            let addr = canonical(addr);
            access.allow_from.iter().any(|net| net.contains(&addr))
        });
        if !allowed {
            return Err(Refusal::forbidden(format!(
                "slot API not open to {}",
                req.remote_addr.as_deref().unwrap_or("an unknown address")
            )));
        }
    }
    if let Some(secret) = &access.secret {
        let presented = query_value(query, "secret").or_else(|| req.bearer_token());
        if !presented.is_some_and(|p| constant_time_eq(p.as_bytes(), secret.as_bytes())) {
            return Err(Refusal::forbidden("slot API secret missing or wrong"));
        }
    }
    Ok(())
}

/// An IPv4-mapped IPv6 address (`::ffff:127.0.0.1`) counts as its IPv4 address.
fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(addr),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from(addr: &str) -> Request {
        Request {
            remote_addr: Some(addr.to_string()),
            ..Request::default()
        }
    }

    fn loopback_only(secret: Option<&str>) -> SlotApiAccess {
        SlotApiAccess {
            allow_from: vec!["127.0.0.1/32".parse().unwrap()],
            secret: secret.map(str::to_string),
        }
    }

    #[test]
    fn address_allowed_or_not() {
        let access = loopback_only(None);
        assert!(check_caller(&access, &from("127.0.0.1"), &[]).is_ok());
        assert!(check_caller(&access, &from("192.0.2.1"), &[]).is_err());
        assert!(check_caller(&access, &Request::default(), &[]).is_err());
        assert!(check_caller(&access, &from("not an address"), &[]).is_err());
    }

    #[test]
    fn ipv4_mapped_counts_as_ipv4() {
        let access = loopback_only(None);
        assert!(check_caller(&access, &from("::ffff:127.0.0.1"), &[]).is_ok());
    }

    #[test]
    fn secret_in_the_query() {
        let access = loopback_only(Some("s3cret"));
        let query = |v: &str| vec![("secret".to_string(), v.to_string())];
        let req = from("127.0.0.1");
        assert!(check_caller(&access, &req, &query("s3cret")).is_ok());
        assert!(check_caller(&access, &req, &query("s3cre")).is_err());
        assert!(check_caller(&access, &req, &[]).is_err());
    }

    #[test]
    fn any_address_when_no_list() {
        let access = SlotApiAccess::default();
        assert!(check_caller(&access, &from("192.0.2.1"), &[]).is_ok());
    }
}
