//! CORS: browsers on the origins listed in `cors_origins` (default none: same-origin only)
//! may call the API with credentials; every other origin gets no `Access-Control-*` header,
//! so the browser keeps the answer from its page. Preflights (`OPTIONS`) on every route
//! answer 204, with the CORS headers for a listed origin only.

use super::AppState;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// Request headers a listed origin may send.
const ALLOW_HEADERS: &str = "authorization, content-type, last-event-id, x-csrf-token";

/// Response headers a listed origin's page may read.
const EXPOSE_HEADERS: &str = "retry-after, location";

/// How long a browser may cache a preflight's answer, in seconds.
const MAX_AGE: &str = "600";

/// `scheme://host[:port]` in the form browsers send in `Origin`: lowercase, the scheme's
/// default port dropped. Anything else (a path, a query, user info, another scheme, a
/// port out of range) is an error naming the problem.
pub fn normalize_origin(text: &str) -> Result<String, String> {
    let lower = text.trim().to_ascii_lowercase();
    let (scheme, authority) = lower
        .split_once("://")
        .ok_or_else(|| format!("`{text}` is not scheme://host[:port]"))?;
    let default_port = match scheme {
        "http" => 80,
        "https" => 443,
        _ => return Err(format!("`{text}`: the scheme must be http or https")),
    };
    if authority.is_empty()
        || authority
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || matches!(c, '/' | '?' | '#' | '@'))
    {
        return Err(format!(
            "`{text}`: an origin is scheme://host[:port], with no path, query or user"
        ));
    }
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (inside, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("`{text}`: an unclosed IPv6 address"))?;
        if inside.is_empty()
            || !inside
                .chars()
                .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.')
        {
            return Err(format!("`{text}`: not an IPv6 address"));
        }
        let port = match after {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or_else(|| format!("`{text}`: junk after the address"))?,
            ),
        };
        (format!("[{inside}]"), port)
    } else {
        let (host, port) = match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        };
        if host.is_empty()
            || !host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        {
            return Err(format!("`{text}`: not a host name or address"));
        }
        (host.to_string(), port)
    };
    let port = match port {
        None => None,
        Some(p) => {
            let n: u16 = p
                .parse()
                .ok()
                .filter(|n| *n > 0 && p.bytes().all(|b| b.is_ascii_digit()))
                .ok_or_else(|| format!("`{text}`: the port must be 1-65535"))?;
            (n != default_port).then_some(n)
        }
    };
    Ok(match port {
        Some(p) => format!("{scheme}://{host}:{p}"),
        None => format!("{scheme}://{host}"),
    })
}

/// Whether a request path matches a route template (`{id}` matches one non-empty segment).
fn path_matches(template: &str, path: &str) -> bool {
    let mut t = template.split('/');
    let mut p = path.split('/');
    loop {
        match (t.next(), p.next()) {
            (None, None) => return true,
            (Some(ts), Some(ps)) => {
                let param = ts.starts_with('{') && ts.ends_with('}');
                if !(ts == ps || (param && !ps.is_empty())) {
                    return false;
                }
            }
            _ => return false,
        }
    }
}

/// The methods the routes at `path` take, in the table's order (HEAD with GET).
fn methods_of(path: &str) -> Vec<&'static str> {
    let mut methods: Vec<&'static str> = Vec::new();
    for r in super::ROUTES {
        if path_matches(r.path, path) && !methods.contains(&r.method) {
            methods.push(r.method);
            if r.method == "GET" && !methods.contains(&"HEAD") {
                methods.push("HEAD");
            }
        }
    }
    methods
}

/// The request's `Origin`, when it is one of the listed origins.
fn listed_origin(headers: &HeaderMap, state: &AppState) -> Option<HeaderValue> {
    let origin = headers.get(header::ORIGIN)?.to_str().ok()?;
    let origin = origin.trim().to_ascii_lowercase();
    state
        .config
        .cors_origins
        .iter()
        .find(|o| **o == origin)
        .and_then(|o| HeaderValue::from_str(o).ok())
}

/// The CORS middleware (outermost, so error answers carry the headers too).
pub(super) async fn cors(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let listed = listed_origin(req.headers(), &state);
    // With an allow-list the answer depends on the origin, so caches must key on it.
    let vary = !state.config.cors_origins.is_empty();
    if req.method() == Method::OPTIONS {
        let methods = methods_of(req.uri().path());
        if methods.is_empty() {
            // No such route: the 404 it would get for any method.
            return next.run(req).await;
        }
        let mut allow = methods.join(", ");
        allow.push_str(", OPTIONS");
        let mut response = StatusCode::NO_CONTENT.into_response();
        let headers = response.headers_mut();
        if let Ok(v) = HeaderValue::from_str(&allow) {
            headers.insert(header::ALLOW, v);
        }
        if let Some(origin) = listed {
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
            if let Ok(v) = HeaderValue::from_str(&methods.join(", ")) {
                headers.insert(header::ACCESS_CONTROL_ALLOW_METHODS, v);
            }
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_static(ALLOW_HEADERS),
            );
            headers.insert(
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from_static(MAX_AGE),
            );
        }
        if vary {
            headers.append(header::VARY, HeaderValue::from_static("Origin"));
        }
        return response;
    }
    let mut response = next.run(req).await;
    let headers = response.headers_mut();
    if let Some(origin) = listed {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
        headers.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static(EXPOSE_HEADERS),
        );
    }
    if vary {
        headers.append(header::VARY, HeaderValue::from_static("Origin"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_normalized_and_bad_ones_refused() {
        for (given, want) in [
            ("https://app.example", "https://app.example"),
            ("HTTPS://App.Example:443", "https://app.example"),
            ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
            ("http://localhost:80", "http://localhost"),
            ("http://[::1]:3000", "http://[::1]:3000"),
        ] {
            assert_eq!(normalize_origin(given).unwrap(), want, "{given}");
        }
        for bad in [
            "app.example",
            "ftp://app.example",
            "https://app.example/",
            "https://app.example/path",
            "https://user@app.example",
            "https://app.example:0",
            "https://app.example:99999",
            "https://app.example:+80",
            "https://",
            "https://a b",
            "https://[::1",
            "*",
            "null",
        ] {
            assert!(normalize_origin(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn preflight_methods_come_from_the_route_table() {
        assert_eq!(methods_of("/v1/runs"), ["POST", "GET", "HEAD"]);
        assert_eq!(methods_of("/v1/runs/run_1/cancel"), ["POST"]);
        assert_eq!(methods_of("/v1/session"), ["POST", "GET", "HEAD", "DELETE"]);
        assert!(methods_of("/v1/nothing").is_empty());
        assert!(methods_of("/v1/runs//cancel").is_empty());
        assert!(methods_of("/v1/runs/").is_empty());
    }
}
