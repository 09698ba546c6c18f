//! What the gateway does to headers on the way through: hop-by-hop headers (RFC 9110
//! section 7.6.1), the credential, Keyward's identity headers, and the forwarding
//! headers (`X-Forwarded-For`, `Forwarded`), with the client address taken from
//! `X-Forwarded-For` only when the peer is a trusted proxy.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use ipnet::IpNet;

pub const IDENTITY: HeaderName = HeaderName::from_static("keyward-identity");
pub const KEY_ID: HeaderName = HeaderName::from_static("keyward-key-id");
pub const SCOPES: HeaderName = HeaderName::from_static("keyward-scopes");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Removes the hop-by-hop headers: those RFC 9110 names and those the `Connection`
/// header lists. With `keep_upgrade`, `Connection: upgrade` and `Upgrade` stay, so a
/// protocol switch (WebSocket) reaches the other side.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in listed {
        if !(keep_upgrade && name == header::UPGRADE) {
            headers.remove(name);
        }
    }
    for name in [
        header::CONNECTION,
        KEEP_ALIVE,
        PROXY_CONNECTION,
        header::PROXY_AUTHORIZATION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
    ] {
        headers.remove(name);
    }
    if !keep_upgrade {
        headers.remove(header::UPGRADE);
    }
    if keep_upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// Whether the request asks to switch protocols (`Connection: upgrade` + `Upgrade`).
pub fn wants_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// Removes every `Keyward-*` header a client sent: the upstream trusts them as the
/// gateway's word, so none may come from outside.
pub fn strip_keyward_headers(headers: &mut HeaderMap) {
    let spoofed: Vec<HeaderName> = headers
        .keys()
        .filter(|n| n.as_str().starts_with("keyward-"))
        .cloned()
        .collect();
    for name in spoofed {
        headers.remove(name);
    }
}

/// The key the request carries: the configured header if set and present, else
/// `Authorization: Bearer`. Returned owned, because the headers are rewritten next.
pub fn credential(headers: &HeaderMap, key_header: Option<&HeaderName>) -> Option<String> {
    if let Some(v) = key_header.and_then(|h| headers.get(h)) {
        return v.to_str().ok().map(|s| s.trim().to_owned());
    }
    bearer(headers).map(str::to_owned)
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
}

/// Removes the credential: the configured header, and `Authorization` when it is a
/// bearer credential (another scheme is the upstream's own business and passes).
pub fn strip_credential(headers: &mut HeaderMap, key_header: Option<&HeaderName>) {
    if let Some(h) = key_header {
        headers.remove(h);
    }
    if bearer(headers).is_some() {
        headers.remove(header::AUTHORIZATION);
    }
}

/// The client's address: the TCP peer, or, when the peer is a trusted proxy, the
/// rightmost `X-Forwarded-For` entry that is not itself a trusted proxy (entries left
/// of it could have been written by anyone).
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let mut client = peer;
    let chain: Vec<&str> = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .collect();
    for entry in chain.iter().rev() {
        match entry.trim().parse::<IpAddr>() {
            Ok(ip) => {
                client = ip;
                if !is_trusted(&ip) {
                    break;
                }
            }
            // An entry that is no address ends what can be believed.
            Err(_) => break,
        }
    }
    client
}

/// Adds the forwarding headers for the upstream. The incoming chain is kept only from a
/// trusted peer; from anyone else it is replaced, so the upstream never reads an
/// address the client made up.
pub fn add_forwarded(headers: &mut HeaderMap, peer: IpAddr, peer_trusted: bool, tls: bool) {
    let proto = if tls { "https" } else { "http" };
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned);
    let xff = match (peer_trusted, joined(headers, &X_FORWARDED_FOR)) {
        (true, Some(chain)) => format!("{chain}, {peer}"),
        _ => peer.to_string(),
    };
    let node = match peer {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("\"[{v6}]\""),
    };
    let mut forwarded = format!("for={node};proto={proto}");
    if let Some(h) = host.as_deref().filter(|h| is_token(h)) {
        forwarded.push_str(";host=");
        forwarded.push_str(h);
    }
    let forwarded = match (peer_trusted, joined(headers, &header::FORWARDED)) {
        (true, Some(chain)) => format!("{chain}, {forwarded}"),
        _ => forwarded,
    };
    for (name, value) in [
        (X_FORWARDED_FOR, Some(xff)),
        (header::FORWARDED, Some(forwarded)),
        (X_FORWARDED_PROTO, Some(proto.to_owned())),
        (X_FORWARDED_HOST, host),
    ] {
        headers.remove(&name);
        if let Some(v) = value.and_then(|v| HeaderValue::try_from(v).ok()) {
            headers.insert(name, v);
        }
    }
}

/// All values of a header, comma-joined, if any.
fn joined(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    let parts: Vec<&str> = headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    (!parts.is_empty()).then(|| parts.join(", "))
}

/// Whether a host can go into `Forwarded` unquoted (RFC 7239 token characters).
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~:".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn hop_by_hop_headers_go_including_those_connection_lists() {
        let mut h = map(&[
            ("connection", "keep-alive, x-hop"),
            ("keep-alive", "timeout=5"),
            ("x-hop", "1"),
            ("te", "trailers"),
            ("x-end", "2"),
        ]);
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-end"));
    }

    #[test]
    fn an_upgrade_keeps_its_two_headers() {
        let mut h = map(&[
            ("connection", "Upgrade, x-hop"),
            ("upgrade", "websocket"),
            ("x-hop", "1"),
        ]);
        assert!(wants_upgrade(&h));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h["upgrade"], "websocket");
        assert_eq!(h["connection"], "upgrade");
        assert!(!h.contains_key("x-hop"));
    }

    #[test]
    fn client_address_comes_from_xff_only_through_trusted_proxies() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let h = map(&[("x-forwarded-for", "6.6.6.6, 1.2.3.4, 10.0.0.2")]);
        let peer: IpAddr = "10.0.0.1".parse().unwrap();
        assert_eq!(
            client_ip(peer, &h, &trusted),
            "1.2.3.4".parse::<IpAddr>().unwrap()
        );
        let stranger: IpAddr = "9.9.9.9".parse().unwrap();
        assert_eq!(client_ip(stranger, &h, &trusted), stranger);
        assert_eq!(client_ip(peer, &HeaderMap::new(), &trusted), peer);
    }

    #[test]
    fn forwarding_headers_replace_an_untrusted_chain() {
        let mut h = map(&[("x-forwarded-for", "6.6.6.6"), ("host", "api.example")]);
        add_forwarded(&mut h, "1.2.3.4".parse().unwrap(), false, false);
        assert_eq!(h["x-forwarded-for"], "1.2.3.4");
        assert_eq!(h["forwarded"], "for=1.2.3.4;proto=http;host=api.example");
        let mut h = map(&[("x-forwarded-for", "6.6.6.6")]);
        add_forwarded(&mut h, "::1".parse().unwrap(), true, true);
        assert_eq!(h["x-forwarded-for"], "6.6.6.6, ::1");
        assert_eq!(h["forwarded"], "for=\"[::1]\";proto=https");
    }

    #[test]
    fn credentials_and_identity_headers_are_stripped() {
        let custom = HeaderName::from_static("x-api-key");
        let mut h = map(&[
            ("authorization", "Bearer kw_x"),
            ("x-api-key", "kw_y"),
            ("keyward-identity", "forged"),
            ("Keyward-Scopes", "admin"),
        ]);
        assert_eq!(credential(&h, Some(&custom)).as_deref(), Some("kw_y"));
        assert_eq!(credential(&h, None).as_deref(), Some("kw_x"));
        strip_credential(&mut h, Some(&custom));
        strip_keyward_headers(&mut h);
        assert!(h.is_empty());
        let mut basic = map(&[("authorization", "Basic dTpw")]);
        strip_credential(&mut basic, None);
        assert!(basic.contains_key("authorization"));
    }
}
