//! Who may call what, checked before any handler runs (`serve`'s middleware):
//! - the `Host` header must be one of the configured names (`serve --allowed-host`; on a loopback
//!   address, the loopback names by default): a DNS-rebinding page cannot reach a local server;
//! - a mutating request (any method but GET, HEAD, OPTIONS, except the searches, which are POSTs
//!   that change nothing) from a browser page of another origin is refused unless that origin is
//!   in the CORS allow-list (`serve --cors-origin`): browsers send `Origin` (and `Sec-Fetch-Site`)
//!   on such requests, and a form or a plain-text POST cannot forge them;
//! - with a token (`serve --auth-token-file`, `IMGSEARCH_AUTH_TOKEN`), mutating requests (every
//!   request but `/health` with `--auth all`) must carry it as `Authorization: Bearer <token>` or
//!   `X-API-Key: <token>`, compared in constant time (`subtle`) on SHA-256 digests, so neither its
//!   content nor its length leaks through timing.
//!
//! `serve` refuses to listen on a non-loopback address without a token unless told
//! `--insecure-no-auth`. Every refusal is the API's JSON error body.

use std::sync::Arc;

use axum::{
    extract::{Request, State},
    http::{HeaderMap, Method, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{ApiError, ApiState};

/// Whether reads need the token too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum AuthScope {
    /// Only requests that change something (the default).
    #[default]
    Mutations,
    /// Every request but `/health`.
    All,
}

/// The access rules of one server.
#[derive(Debug, Default)]
pub struct Access {
    /// The token requests must carry; none: no token (a loopback server, or `--insecure-no-auth`).
    pub token: Option<SecretString>,
    pub scope: AuthScope,
    /// Accepted `Host` names, lowercase, without port; empty: any.
    pub hosts: Vec<String>,
    /// Origins whose pages may mutate (the CORS allow-list), as `scheme://host[:port]`.
    pub origins: Vec<String>,
}

impl Access {
    /// The default `Host` names for an address: the loopback names on a loopback address (a page
    /// served from another name that resolves to 127.0.0.1, DNS rebinding, is refused); none (any)
    /// elsewhere unless `--allowed-host` names them.
    pub fn default_hosts(addr: std::net::SocketAddr, given: &[String]) -> Vec<String> {
        let mut hosts: Vec<String> = given.iter().map(|h| strip_port(&h.to_ascii_lowercase()).to_owned()).collect();
        if addr.ip().is_loopback() {
            hosts.extend(["localhost", "127.0.0.1", "::1"].map(String::from));
            hosts.push(addr.ip().to_string());
        } else if !hosts.is_empty() && !addr.ip().is_unspecified() {
            hosts.push(addr.ip().to_string());
        }
        hosts.sort();
        hosts.dedup();
        hosts
    }

    fn host_allowed(&self, headers: &HeaderMap) -> bool {
        if self.hosts.is_empty() {
            return true;
        }
        let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else { return false };
        let host = host.to_ascii_lowercase();
        self.hosts.iter().any(|h| h == strip_port(&host))
    }

    /// A browser request from a page of another origin that is not allowed.
    fn cross_site(&self, headers: &HeaderMap) -> bool {
        match headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) {
            Some(origin) => {
                let origin = origin.trim_end_matches('/');
                let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or_default();
                let same = origin.split_once("://").is_some_and(|(_, rest)| rest.eq_ignore_ascii_case(host));
                !same && !self.origins.iter().any(|o| o.trim_end_matches('/').eq_ignore_ascii_case(origin))
            }
            // no Origin: not a browser's cross-origin request, unless it says so
            None => headers.get("sec-fetch-site").is_some_and(|v| v.as_bytes() == b"cross-site"),
        }
    }

    fn presented(&self, headers: &HeaderMap) -> Option<bool> {
        let token = self.token.as_ref()?;
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()));
        let Some(given) = given else { return Some(false) };
        let (a, b) = (Sha256::digest(given.trim().as_bytes()), Sha256::digest(token.expose_secret().as_bytes()));
        Some(bool::from(a.ct_eq(&b)))
    }
}

fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') && port.chars().all(|c| c.is_ascii_digit()) => name,
        _ => host,
    }
}

/// Whether a request changes something: any method but GET, HEAD and OPTIONS, except the
/// searches (POSTs that only read).
pub fn is_mutating(method: &Method, path: &str) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) && !matches!(path, "/api/v1/search" | "/api/v1/search/image")
}

/// The middleware: host, cross-site, token, in that order.
pub async fn guard(State(s): State<Arc<ApiState>>, req: Request, next: Next) -> Response {
    let access = &s.access;
    let path = req.uri().path();
    if path == "/health" {
        return next.run(req).await;
    }
    if !access.host_allowed(req.headers()) {
        return ApiError {
            status: StatusCode::MISDIRECTED_REQUEST,
            code: "host_not_allowed",
            message: "this server does not answer to that Host; see serve --allowed-host".into(),
        }
        .into_response();
    }
    let mutating = is_mutating(req.method(), path);
    if mutating && access.cross_site(req.headers()) {
        return ApiError { status: StatusCode::FORBIDDEN, code: "cross_site", message: "cross-site request refused: its origin is not in serve --cors-origin".into() }
            .into_response();
    }
    if (mutating || access.scope == AuthScope::All) && access.presented(req.headers()) == Some(false) {
        let mut r = ApiError { status: StatusCode::UNAUTHORIZED, code: "unauthorized", message: "this request needs the server's token: Authorization: Bearer <token>".into() }
            .into_response();
        r.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
        return r;
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn hosts_ports_and_loopback_defaults() {
        let access = Access { hosts: Access::default_hosts("127.0.0.1:8080".parse().unwrap(), &[]), ..Default::default() };
        assert!(access.host_allowed(&headers(&[("host", "localhost:8080")])));
        assert!(access.host_allowed(&headers(&[("host", "127.0.0.1")])));
        assert!(access.host_allowed(&headers(&[("host", "[::1]:8080")])));
        assert!(!access.host_allowed(&headers(&[("host", "attacker.example:8080")])), "DNS rebinding");
        assert!(!access.host_allowed(&HeaderMap::new()));
        let any = Access { hosts: Access::default_hosts("0.0.0.0:8080".parse().unwrap(), &[]), ..Default::default() };
        assert!(any.host_allowed(&headers(&[("host", "search.lan")])));
        let named = Access { hosts: Access::default_hosts("0.0.0.0:8080".parse().unwrap(), &["Search.LAN:8080".into()]), ..Default::default() };
        assert!(named.host_allowed(&headers(&[("host", "search.lan:8080")])));
        assert!(!named.host_allowed(&headers(&[("host", "other.lan")])));
    }

    #[test]
    fn cross_site_is_told_by_origin_and_fetch_metadata() {
        let access = Access { origins: vec!["http://localhost:3000".into()], ..Default::default() };
        let h = |origin: &str| headers(&[("host", "localhost:8000"), ("origin", origin)]);
        assert!(!access.cross_site(&h("http://localhost:8000")), "same origin");
        assert!(!access.cross_site(&h("http://localhost:3000")), "the allowed UI");
        assert!(access.cross_site(&h("http://evil.example")));
        assert!(access.cross_site(&h("null")), "a sandboxed or file page");
        assert!(!access.cross_site(&headers(&[("host", "localhost:8000")])), "curl sends no Origin");
        assert!(access.cross_site(&headers(&[("host", "localhost:8000"), ("sec-fetch-site", "cross-site")])));
    }

    #[test]
    fn the_token_is_taken_from_either_header_and_compared_whole() {
        let access = Access { token: Some(SecretString::from("s3cret-token-0123456789")), ..Default::default() };
        assert_eq!(access.presented(&headers(&[("authorization", "Bearer s3cret-token-0123456789")])), Some(true));
        assert_eq!(access.presented(&headers(&[("x-api-key", "s3cret-token-0123456789")])), Some(true));
        assert_eq!(access.presented(&headers(&[("authorization", "Bearer s3cret-token-012345678")])), Some(false));
        assert_eq!(access.presented(&headers(&[("authorization", "Basic czNjcmV0")])), Some(false));
        assert_eq!(access.presented(&HeaderMap::new()), Some(false));
        assert_eq!(Access::default().presented(&HeaderMap::new()), None, "no token configured");
    }

    #[test]
    fn searches_are_reads() {
        assert!(!is_mutating(&Method::POST, "/api/v1/search"));
        assert!(!is_mutating(&Method::GET, "/api/v1/vectors/upgrade"));
        assert!(is_mutating(&Method::POST, "/api/v1/vectors/reset"));
        assert!(is_mutating(&Method::DELETE, "/api/v1/vectors/by-asset/1"));
        assert!(is_mutating(&Method::PATCH, "/api/v1/categories/1"));
    }
}
