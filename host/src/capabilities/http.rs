//! Outbound HTTP through `wasi:http`, under the plugin's egress policy.
//!
//! Guests use their language's normal HTTP client (it speaks `wasi:http/outgoing-handler`);
//! every request they hand over is checked here, in the host, before a byte leaves:
//!
//! 1. a `[[grants.http]]` rule must allow the host, port, method and path;
//! 2. `${secret:NAME}` placeholders in header values are replaced only when the manifest
//!    grants that secret for this host (the guest never holds the value);
//! 3. the name is resolved here and every address checked (SSRF guard): loopback,
//!    private, link-local, metadata and other special addresses are refused unless the
//!    rule names the address itself (an IP literal) or says `allow_private = true`; the
//!    connection goes to the address that was checked, so a second lookup cannot swap it
//!    (DNS rebinding). Redirects are new requests and pass the same checks.
//! 4. per-invocation limits on request count, response bytes and time;
//! 5. every request becomes an `http` event (method, host, path, status, bytes, duration;
//!    never headers or bodies); a refusal also logs which grant is missing.
//!
//! Responses that echo a substituted secret have it redacted, in headers and body, before
//! the guest sees them (requests carrying a secret ask for identity encoding and no
//! ranges, so the echo arrives whole). Redaction guards against accidental echoes; the
//! guard against a host that would transform the value is that only the hosts granted
//! the secret ever receive it.

use super::RunServices;
use super::log::{GuestEvent, Level, LogBuffer, Observer, Source};
use bytes::{Bytes, BytesMut};
use http::uri::Scheme;
use http::{HeaderValue, Request, Response};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

/// One `[[grants.http]]` rule: what a plugin may reach.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpRule {
    /// A host name (`api.example.com`), a wildcard for its subdomains (`*.example.com`),
    /// or an IP literal (the only way to reach an address by number).
    pub host: String,
    /// The port; without one, the scheme's default (80 for http, 443 for https).
    #[serde(default)]
    pub port: Option<u16>,
    /// Allowed methods (upper case); empty means `GET` and `HEAD`.
    #[serde(default)]
    pub methods: Vec<String>,
    /// Allowed path prefix; empty means every path.
    #[serde(default)]
    pub path_prefix: Option<String>,
    /// Whether the name may resolve to loopback, private or link-local addresses (for
    /// services on the operator's own network; metadata addresses stay refused).
    #[serde(default)]
    pub allow_private: bool,
}

impl HttpRule {
    /// Checks the rule itself (when the manifest is loaded).
    pub fn validate(&self) -> Result<(), String> {
        let host = self.host.trim();
        if host.is_empty() || host.len() > 253 {
            return Err("host must be a host name, `*.domain` or an IP literal".into());
        }
        let bare = host.strip_prefix("*.").unwrap_or(host);
        if bare.is_empty()
            || bare.contains('*')
            || !bare
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':'))
        {
            return Err(format!(
                "host `{host}` must be a host name, `*.domain` or an IP literal \
                 (no scheme, port or path; a bare `*` is not allowed)"
            ));
        }
        for m in &self.methods {
            if m.is_empty() || !m.bytes().all(|b| b.is_ascii_uppercase()) {
                return Err(format!("method `{m}` must be an upper-case HTTP method"));
            }
        }
        if let Some(prefix) = &self.path_prefix
            && !prefix.starts_with('/')
        {
            return Err(format!("path_prefix `{prefix}` must start with `/`"));
        }
        Ok(())
    }

    fn host_matches(&self, host: &str) -> bool {
        host_pattern_matches(&self.host, host)
    }

    fn names_ip(&self, ip: IpAddr) -> bool {
        self.host.trim().parse::<IpAddr>().ok() == Some(ip)
    }
}

/// Whether `host` (lower case) is what `pattern` names: the same name, or for
/// `*.domain` a subdomain of it. A wildcard never matches an IP literal: numbers must be
/// named.
fn host_pattern_matches(pattern: &str, host: &str) -> bool {
    let pattern = pattern.trim().to_ascii_lowercase();
    match pattern.strip_prefix("*.") {
        Some(domain) => {
            host.parse::<IpAddr>().is_err()
                && host
                    .strip_suffix(domain)
                    .is_some_and(|sub| sub.len() > 1 && sub.ends_with('.'))
        }
        None => pattern == host,
    }
}

/// Whether `host` is allowed by a secret grant's host list.
fn secret_host_allowed(hosts: &[String], host: &str) -> bool {
    hosts.iter().any(|h| host_pattern_matches(h, host))
}

/// Limits on one invocation's outbound HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// Most requests.
    pub max_requests: u32,
    /// Most response body bytes, all requests together.
    pub max_response_bytes: u64,
    /// Longest wait for one response's head (connect, TLS, send, first byte).
    pub request_timeout: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_requests: 64,
            max_response_bytes: 16 << 20,
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// Turns host names into addresses. Operators can pin names (like curl's `--resolve`),
/// which also lets tests give a public-looking name a loopback address.
#[derive(Debug, Clone, Default)]
pub struct Resolver {
    overrides: Arc<BTreeMap<String, Vec<IpAddr>>>,
}

impl Resolver {
    /// A resolver that answers `overrides` itself and asks the system for other names.
    pub fn with_overrides(overrides: BTreeMap<String, Vec<IpAddr>>) -> Self {
        let overrides = overrides
            .into_iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect();
        Resolver {
            overrides: Arc::new(overrides),
        }
    }

    async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, Error> {
        if let Some(ips) = self.overrides.get(host) {
            return Ok(ips.iter().map(|ip| SocketAddr::new(*ip, port)).collect());
        }
        match tokio::net::lookup_host((host, port)).await {
            Ok(addrs) => Ok(addrs.collect()),
            Err(_) => Err(Error::DnsError {
                rcode: Some("lookup failed".into()),
                info_code: None,
            }),
        }
    }
}

/// What a plugin may reach over HTTP, and under which limits.
#[derive(Debug, Clone, Default)]
pub struct HttpPolicy {
    /// The rules; a request must match one.
    pub rules: Vec<HttpRule>,
    /// Secret name -> hosts it may be sent to.
    pub secrets: BTreeMap<String, Vec<String>>,
    /// Limits.
    pub limits: HttpLimits,
    /// Name resolution.
    pub resolver: Resolver,
}

/// One outbound request, as its `http` event shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HttpRecord {
    /// `GET`, `POST`, ...
    pub method: String,
    /// `http` or `https`.
    pub scheme: String,
    /// The host as the guest named it.
    pub host: String,
    /// The port.
    pub port: u16,
    /// The path, without the query (which may carry data).
    pub path: String,
    /// The response status, when one came.
    pub status: Option<u16>,
    /// Response body bytes the guest received.
    pub bytes: u64,
    /// From the request to the end of the response body, in milliseconds.
    pub duration_ms: u64,
    /// `ok`, `denied` or `error`.
    pub outcome: String,
    /// Why it was denied or failed.
    pub reason: Option<String>,
}

/// Per-invocation state behind `wasi:http`: the policy, and what has been used of it.
pub struct HttpHooks {
    policy: Option<Arc<HttpPolicy>>,
    services: Option<Arc<dyn RunServices>>,
    log: Arc<Mutex<LogBuffer>>,
    observer: Option<Observer>,
    requests: u32,
    body_budget: Arc<AtomicU64>,
}

impl HttpHooks {
    /// Hooks for one invocation; `policy: None` refuses every request.
    pub fn new(
        policy: Option<Arc<HttpPolicy>>,
        services: Option<Arc<dyn RunServices>>,
        log: Arc<Mutex<LogBuffer>>,
        observer: Option<Observer>,
    ) -> Self {
        let budget = policy
            .as_ref()
            .map(|p| p.limits.max_response_bytes)
            .unwrap_or(0);
        HttpHooks {
            policy,
            services,
            log,
            observer,
            requests: 0,
            body_budget: Arc::new(AtomicU64::new(budget)),
        }
    }
}

/// The parts of a request the policy looks at.
struct Target {
    method: String,
    scheme: String,
    host: String,
    port: u16,
    path: String,
    tls: bool,
}

impl Target {
    fn of(request: &Request<WasiBody>) -> Result<Target, String> {
        let uri = request.uri();
        let tls = match uri.scheme() {
            Some(s) if *s == Scheme::HTTPS => true,
            Some(s) if *s == Scheme::HTTP => false,
            _ => return Err("only http and https URLs can be requested".into()),
        };
        let authority = uri.authority().ok_or("the request has no host")?;
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .trim_end_matches('.')
            .to_ascii_lowercase();
        if host.is_empty() {
            return Err("the request has no host".into());
        }
        Ok(Target {
            method: request.method().as_str().to_string(),
            scheme: if tls { "https" } else { "http" }.to_string(),
            port: authority.port_u16().unwrap_or(if tls { 443 } else { 80 }),
            host,
            path: uri.path().to_string(),
            tls,
        })
    }

    fn record(&self, outcome: &str, reason: Option<String>) -> HttpRecord {
        HttpRecord {
            method: self.method.clone(),
            scheme: self.scheme.clone(),
            host: self.host.clone(),
            port: self.port,
            path: self.path.clone(),
            status: None,
            bytes: 0,
            duration_ms: 0,
            outcome: outcome.into(),
            reason,
        }
    }

    fn describe(&self) -> String {
        format!(
            "{} {}://{}:{}{}",
            self.method, self.scheme, self.host, self.port, self.path
        )
    }
}

/// Paths that climb out of a prefix after normalisation are not trusted to a prefix.
fn path_is_plain(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    !lower.contains("%2e") && !lower.contains("%2f") && !lower.contains("%5c") && {
        !path.split('/').any(|seg| seg == ".." || seg == ".")
    }
}

/// The rule that allows `t`, or the message naming the missing grant.
fn matching_rule<'a>(policy: &'a HttpPolicy, t: &Target) -> Result<&'a HttpRule, String> {
    let for_host: Vec<&HttpRule> = policy
        .rules
        .iter()
        .filter(|r| r.host_matches(&t.host))
        .collect();
    if for_host.is_empty() {
        return Err(format!(
            "no [[grants.http]] rule allows host `{}` (missing grant: host = \"{}\")",
            t.host, t.host
        ));
    }
    let default_port = if t.tls { 443 } else { 80 };
    let for_port: Vec<&HttpRule> = for_host
        .into_iter()
        .filter(|r| r.port.unwrap_or(default_port) == t.port)
        .collect();
    if for_port.is_empty() {
        return Err(format!(
            "no [[grants.http]] rule for `{}` allows port {} (missing grant: port = {})",
            t.host, t.port, t.port
        ));
    }
    let for_method: Vec<&HttpRule> = for_port
        .into_iter()
        .filter(|r| {
            if r.methods.is_empty() {
                matches!(t.method.as_str(), "GET" | "HEAD")
            } else {
                r.methods.contains(&t.method)
            }
        })
        .collect();
    if for_method.is_empty() {
        return Err(format!(
            "no [[grants.http]] rule for `{}` allows method {} (missing grant: methods = [\"{}\"])",
            t.host, t.method, t.method
        ));
    }
    for_method
        .into_iter()
        .find(|r| match &r.path_prefix {
            None => true,
            Some(prefix) => t.path.starts_with(prefix.as_str()) && path_is_plain(&t.path),
        })
        .ok_or_else(|| {
            format!(
                "no [[grants.http]] rule for `{}` allows path `{}` (missing grant: a path_prefix covering it)",
                t.host, t.path
            )
        })
}

/// Cloud metadata endpoints: never reachable, whatever a rule says.
fn is_metadata(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4 == Ipv4Addr::new(169, 254, 169, 254) || v4 == Ipv4Addr::new(100, 100, 100, 200)
        }
        IpAddr::V6(v6) => v6 == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254),
    }
}

/// Loopback, private, link-local, shared, documentation, multicast, unspecified and other
/// addresses that are not the public internet.
pub fn is_special(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
                || (a == 198 && (b == 18 || b == 19)) // benchmarking
                || a >= 240
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_special(IpAddr::V4(v4));
            }
            let first = v6.segments().first().copied().unwrap_or(0);
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00 // unique local
                || (first & 0xffc0) == 0xfe80 // link local
                || first == 0x2001 && v6.segments().get(1).copied() == Some(0xdb8) // documentation
                || first == 0x0064 // NAT64 well-known prefix can reach IPv4 specials
        }
    }
}

/// The addresses the request may connect to, or why not.
fn check_addresses(rule: &HttpRule, addrs: &[SocketAddr]) -> Result<SocketAddr, Error> {
    let Some(first) = addrs.first() else {
        return Err(Error::DestinationNotFound);
    };
    for addr in addrs {
        let ip = addr.ip();
        if is_metadata(ip) && !rule.names_ip(ip) {
            return Err(Error::DestinationIpProhibited);
        }
        if is_special(ip) && !rule.names_ip(ip) && !rule.allow_private {
            return Err(Error::DestinationIpProhibited);
        }
    }
    Ok(*first)
}

/// `${secret:NAME}` placeholders in `value`.
fn placeholders(value: &[u8]) -> Result<Vec<String>, String> {
    let text = String::from_utf8_lossy(value);
    let mut names = Vec::new();
    let mut rest = text.as_ref();
    while let Some(start) = rest.find("${secret:") {
        let after = rest.get(start + 9..).unwrap_or("");
        let Some(end) = after.find('}') else {
            return Err("an unterminated ${secret:...} placeholder".into());
        };
        let name = after.get(..end).unwrap_or("");
        if name.is_empty()
            || name.len() > 128
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
        {
            return Err(format!("`{name}` is not a secret name"));
        }
        names.push(name.to_string());
        rest = after.get(end + 1..).unwrap_or("");
    }
    Ok(names)
}

fn log_refusal(log: &Mutex<LogBuffer>, what: &str, reason: &str) {
    log.lock().unwrap_or_else(PoisonError::into_inner).push(
        Level::Warn,
        Source::Host,
        &format!("http: {what} refused: {reason}"),
    );
}

type SendFuture = Box<
    dyn Future<
            Output = Result<
                (
                    Response<WasiBody>,
                    Box<dyn Future<Output = Result<(), Error>> + Send>,
                ),
                Error,
            >,
        > + Send,
>;

impl WasiHttpHooks for HttpHooks {
    fn send_request(
        &mut self,
        request: Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> SendFuture {
        drop(fut);
        let observer = self.observer.clone();
        let emit = move |record: HttpRecord| {
            if let Some(o) = &observer {
                o(GuestEvent::Http(record));
            }
        };
        let target = match Target::of(&request) {
            Ok(t) => t,
            Err(reason) => {
                log_refusal(&self.log, "a request", &reason);
                return Box::new(async { Err(Error::HttpRequestUriInvalid) });
            }
        };
        let deny = |reason: String, error: Error| -> SendFuture {
            log_refusal(&self.log, &target.describe(), &reason);
            emit(target.record("denied", Some(reason)));
            Box::new(async move { Err(error) })
        };
        let Some(policy) = self.policy.clone() else {
            return deny(
                "this plugin has no http grants (missing grant: a [[grants.http]] rule in its manifest)"
                    .into(),
                Error::HttpRequestDenied,
            );
        };
        self.requests = self.requests.saturating_add(1);
        if self.requests > policy.limits.max_requests {
            return deny(
                format!(
                    "the step's limit of {} requests is spent",
                    policy.limits.max_requests
                ),
                Error::ConnectionLimitReached,
            );
        }
        let rule = match matching_rule(&policy, &target) {
            Ok(rule) => rule.clone(),
            Err(reason) => return deny(reason, Error::HttpRequestDenied),
        };
        // Secrets: every placeholder must be granted for this host.
        let mut wanted: Vec<(http::HeaderName, String)> = Vec::new();
        for (name, value) in request.headers() {
            let names = match placeholders(value.as_bytes()) {
                Ok(n) => n,
                Err(reason) => return deny(reason, Error::HttpRequestDenied),
            };
            for secret in names {
                match policy.secrets.get(&secret) {
                    None => {
                        return deny(
                            format!(
                                "secret `{secret}` is not granted to this plugin \
                                 (missing grant: [grants.secrets] {secret} = [\"{}\"])",
                                target.host
                            ),
                            Error::HttpRequestDenied,
                        );
                    }
                    Some(hosts) if !secret_host_allowed(hosts, &target.host) => {
                        return deny(
                            format!(
                                "secret `{secret}` may not be sent to `{}` (it is granted for: {})",
                                target.host,
                                hosts.join(", ")
                            ),
                            Error::HttpRequestDenied,
                        );
                    }
                    Some(_) => wanted.push((name.clone(), secret)),
                }
            }
        }
        let services = self.services.clone();
        let budget = self.body_budget.clone();
        let log = self.log.clone();
        let limits = policy.limits;
        let resolver = policy.resolver.clone();
        let between_bytes = options
            .and_then(|o| o.between_bytes_timeout)
            .unwrap_or(limits.request_timeout)
            .min(limits.request_timeout);
        Box::new(async move {
            let started = Instant::now();
            let fail = |reason: &str, error: Error| {
                log_refusal(&log, &target.describe(), reason);
                let mut r = target.record("denied", Some(reason.to_string()));
                r.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
                emit(r);
                Err(error)
            };
            let mut request = request;
            // Substitute secrets in the host; remember their values for redaction.
            let mut values: Vec<String> = Vec::new();
            if !wanted.is_empty() {
                let Some(services) = &services else {
                    return fail(
                        "secrets are only available to runs of a tenant",
                        Error::HttpRequestDenied,
                    );
                };
                let mut resolved: BTreeMap<String, String> = BTreeMap::new();
                for (_, secret) in &wanted {
                    if resolved.contains_key(secret) {
                        continue;
                    }
                    match services.secret(secret).await {
                        Some(v) => {
                            resolved.insert(secret.clone(), v);
                        }
                        None => {
                            return fail(
                                &format!("secret `{secret}` is not set for this tenant"),
                                Error::HttpRequestDenied,
                            );
                        }
                    }
                }
                let headers = request.headers_mut();
                let names: Vec<http::HeaderName> = wanted.iter().map(|(n, _)| n.clone()).collect();
                for name in names {
                    let old: Vec<HeaderValue> = headers.get_all(&name).iter().cloned().collect();
                    headers.remove(&name);
                    for value in old {
                        let mut text = String::from_utf8_lossy(value.as_bytes()).into_owned();
                        for (secret, v) in &resolved {
                            text = text.replace(&format!("${{secret:{secret}}}"), v);
                        }
                        let Ok(mut value) = HeaderValue::from_str(&text) else {
                            return fail(
                                "a secret's value cannot be sent in a header",
                                Error::HttpRequestDenied,
                            );
                        };
                        value.set_sensitive(true);
                        headers.append(name.clone(), value);
                    }
                }
                values = resolved.into_values().filter(|v| !v.is_empty()).collect();
                // Redaction reads the response as sent: ask for it whole and uncompressed,
                // so an echo cannot come back gzipped or in ranges that split the value.
                headers.insert(
                    http::header::ACCEPT_ENCODING,
                    HeaderValue::from_static("identity"),
                );
                headers.remove(http::header::RANGE);
                headers.remove(http::header::IF_RANGE);
            }
            // Resolve here and connect to the address that was checked.
            let addrs = match target.host.parse::<IpAddr>() {
                Ok(ip) => vec![SocketAddr::new(ip, target.port)],
                Err(_) => match resolver.resolve(&target.host, target.port).await {
                    Ok(addrs) => addrs,
                    Err(e) => return fail(&format!("`{}` does not resolve", target.host), e),
                },
            };
            let addr = match check_addresses(&rule, &addrs) {
                Ok(a) => a,
                Err(e) => {
                    let ips: Vec<String> = addrs.iter().map(|a| a.ip().to_string()).collect();
                    return fail(
                        &format!(
                            "`{}` resolves to {}, a private, loopback, link-local or metadata \
                             address (a rule must name the address itself or set allow_private)",
                            target.host,
                            ips.join(", ")
                        ),
                        e,
                    );
                }
            };
            let sent =
                tokio::time::timeout(limits.request_timeout, send(request, &target, addr)).await;
            let (response, io) = match sent {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => {
                    let mut r = target.record("error", Some(e.to_string()));
                    r.duration_ms =
                        u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
                    emit(r);
                    return Err(e);
                }
                Err(_) => {
                    let mut r = target.record("error", Some("timed out".into()));
                    r.duration_ms =
                        u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
                    emit(r);
                    return Err(Error::ConnectionReadTimeout);
                }
            };
            let (mut parts, incoming) = response.into_parts();
            for value in parts.headers.values_mut() {
                if values
                    .iter()
                    .any(|s| contains(value.as_bytes(), s.as_bytes()))
                {
                    *value = HeaderValue::from_static("[redacted]");
                }
            }
            let mut record = target.record("ok", None);
            record.status = Some(parts.status.as_u16());
            let body = Metered {
                inner: incoming,
                budget,
                between_bytes,
                idle: None,
                redact: values,
                held: BytesMut::new(),
                done: false,
                record: Some(record),
                started,
                emit: Box::new(emit),
            };
            Ok((Response::from_parts(parts, body.boxed_unsync()), io))
        })
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static {}
impl<T> Stream for T where T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static {}

fn tls_config() -> Result<Arc<rustls::ClientConfig>, Error> {
    static CONFIG: std::sync::OnceLock<Option<Arc<rustls::ClientConfig>>> =
        std::sync::OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let roots = rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.into(),
            };
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .ok()
                .map(|b| Arc::new(b.with_root_certificates(roots).with_no_client_auth()))
        })
        .clone()
        .ok_or(Error::TlsProtocolError)
}

/// Connects to the checked `addr` (TLS named after the host) and sends the request.
async fn send(
    mut request: Request<WasiBody>,
    target: &Target,
    addr: SocketAddr,
) -> Result<
    (
        Response<hyper::body::Incoming>,
        Box<dyn Future<Output = Result<(), Error>> + Send>,
    ),
    Error,
> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(Error::Connect)?;
    let stream: Box<dyn Stream> = if target.tls {
        let name = rustls::pki_types::ServerName::try_from(target.host.clone())
            .map_err(|_| Error::HttpRequestUriInvalid)?;
        let tls = tokio_rustls::TlsConnector::from(tls_config()?)
            .connect(name, tcp)
            .await
            .map_err(Error::Tls)?;
        Box::new(tls)
    } else {
        Box::new(tcp)
    };
    let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
        .max_buf_size(1 << 20)
        .handshake(TokioIo::new(stream))
        .await?;
    // Origin form on the wire: the authority travels in the Host header.
    let path = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    *request.uri_mut() = http::Uri::try_from(path).map_err(|_| Error::HttpRequestUriInvalid)?;
    // Driven in its own task, aborted when the guest's side is dropped.
    let conn = wasmtime_wasi::runtime::spawn(conn);
    let response = sender.send_request(request).await?;
    let io = async move { conn.await.map_err(Error::from) };
    Ok((response, Box::new(io)))
}

/// The response body the guest reads: counted against the invocation's byte budget,
/// secrets redacted, an idle timeout between frames, and the `http` event when it ends.
struct Metered {
    inner: hyper::body::Incoming,
    budget: Arc<AtomicU64>,
    between_bytes: Duration,
    idle: Option<Pin<Box<tokio::time::Sleep>>>,
    redact: Vec<String>,
    held: BytesMut,
    done: bool,
    record: Option<HttpRecord>,
    started: Instant,
    emit: Box<dyn Fn(HttpRecord) + Send>,
}

const REDACTED: &[u8] = b"[redacted]";

impl Metered {
    /// Redacts secrets in the held bytes and returns what can be released: everything
    /// but a tail that could be the start of a secret split across frames.
    fn release(&mut self, all: bool) -> Bytes {
        for secret in &self.redact {
            let s = secret.as_bytes();
            while let Some(pos) = self.held.windows(s.len()).position(|w| w == s) {
                let tail = self.held.split_off(pos);
                let rest = tail.get(s.len()..).unwrap_or(&[]).to_vec();
                self.held.extend_from_slice(REDACTED);
                self.held.extend_from_slice(&rest);
            }
        }
        let keep = if all {
            0
        } else {
            self.redact
                .iter()
                .map(|s| s.len().saturating_sub(1))
                .max()
                .unwrap_or(0)
        };
        let cut = self.held.len().saturating_sub(keep);
        self.held.split_to(cut).freeze()
    }

    fn finish(&mut self, reason: Option<String>) {
        if let Some(mut record) = self.record.take() {
            record.duration_ms =
                u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
            if reason.is_some() {
                record.outcome = "error".into();
                record.reason = reason;
            }
            (self.emit)(record);
        }
    }
}

impl Drop for Metered {
    fn drop(&mut self) {
        self.finish(None);
    }
}

impl Body for Metered {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = self.get_mut();
        loop {
            if this.done {
                let rest = this.release(true);
                if !rest.is_empty() {
                    return Poll::Ready(Some(Ok(Frame::data(rest))));
                }
                this.finish(None);
                return Poll::Ready(None);
            }
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(None) => this.done = true,
                Poll::Ready(Some(Err(e))) => {
                    this.finish(Some(e.to_string()));
                    return Poll::Ready(Some(Err(Error::from(e))));
                }
                Poll::Ready(Some(Ok(frame))) => {
                    this.idle = None;
                    let Ok(data) = frame.into_data() else {
                        continue; // trailers are not passed on
                    };
                    let n = u64::try_from(data.len()).unwrap_or(u64::MAX);
                    // One atomic step, so concurrent bodies cannot both spend the rest.
                    let spent =
                        this.budget
                            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                                left.checked_sub(n)
                            });
                    if spent.is_err() {
                        this.budget.store(0, Ordering::Relaxed);
                        this.finish(Some("response byte limit reached".into()));
                        return Poll::Ready(Some(Err(Error::HttpResponseBodySize(None))));
                    }
                    if let Some(r) = this.record.as_mut() {
                        r.bytes = r.bytes.saturating_add(n);
                    }
                    this.held.extend_from_slice(&data);
                    let out = this.release(false);
                    if !out.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(out))));
                    }
                }
                Poll::Pending => {
                    let between = this.between_bytes;
                    let idle = this
                        .idle
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep(between)));
                    if idle.as_mut().poll(cx).is_ready() {
                        this.finish(Some("timed out between response bytes".into()));
                        return Poll::Ready(Some(Err(Error::ConnectionReadTimeout)));
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(host: &str) -> HttpRule {
        HttpRule {
            host: host.into(),
            port: None,
            methods: Vec::new(),
            path_prefix: None,
            allow_private: false,
        }
    }

    #[test]
    fn wildcards_match_subdomains_only_and_never_ip_literals() {
        let r = rule("*.example.com");
        assert!(r.host_matches("api.example.com"));
        assert!(r.host_matches("a.b.example.com"));
        assert!(!r.host_matches("example.com"));
        assert!(!r.host_matches("evilexample.com"));
        assert!(!rule("*.0.0.1").host_matches("127.0.0.1"));
        assert!(rule("api.example.com").host_matches("api.example.com"));
        assert!(rule("*").validate().is_err());
        assert!(rule("http://x").validate().is_err());
    }

    #[test]
    fn special_addresses_are_recognised() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(is_special(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["93.184.216.34", "1.1.1.1", "2606:4700::1111"] {
            assert!(!is_special(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn placeholders_are_parsed_and_bad_names_refused() {
        assert_eq!(
            placeholders(b"Bearer ${secret:GH_TOKEN} x ${secret:b}").unwrap(),
            ["GH_TOKEN", "b"]
        );
        assert!(placeholders(b"${secret:a b}").is_err());
        assert!(placeholders(b"${secret:open").is_err());
        assert!(placeholders(b"no placeholder").unwrap().is_empty());
    }

    #[test]
    fn paths_that_climb_are_not_trusted_to_a_prefix() {
        assert!(path_is_plain("/api/v1/items"));
        assert!(!path_is_plain("/api/../admin"));
        assert!(!path_is_plain("/api/%2e%2e/admin"));
    }
}
