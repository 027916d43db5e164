//! The web dashboard at `/`: served over real HTTP with its security headers.

use crate::util::*;
use reqwest::StatusCode;

const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

async fn get(url: &str) -> (StatusCode, reqwest::header::HeaderMap, String) {
    let resp = reqwest::get(url).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    (status, headers, resp.text().await.unwrap())
}

fn header<'a>(h: &'a reqwest::header::HeaderMap, name: &str) -> &'a str {
    h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

fn assert_secured(h: &reqwest::header::HeaderMap) {
    assert_eq!(header(h, "content-security-policy"), CSP);
    assert_eq!(header(h, "x-content-type-options"), "nosniff");
    assert_eq!(header(h, "referrer-policy"), "no-referrer");
}

#[tokio::test]
async fn dashboard_page_and_assets_are_served_with_csp() {
    let server = Server::start(&[]);
    let (status, h, body) = get(&format!("{}/", server.url)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(header(&h, "content-type").starts_with("text/html"));
    assert_secured(&h);
    assert!(body.contains(r#"<form id="login""#), "{body}");
    assert!(body.contains(r#"name="token" type="password""#), "{body}");
    for (file, kind) in [
        ("app.js", "text/javascript"),
        ("app.css", "text/css"),
        ("favicon.svg", "image/svg+xml"),
    ] {
        assert!(body.contains(&format!("/ui/{file}")), "index names {file}");
        let (status, h, asset) = get(&format!("{}/ui/{file}", server.url)).await;
        assert_eq!(status, StatusCode::OK, "{file}");
        assert!(header(&h, "content-type").starts_with(kind), "{file}");
        assert!(!header(&h, "cache-control").is_empty(), "{file}");
        assert_secured(&h);
        assert!(!asset.is_empty());
    }
}

#[tokio::test]
async fn dashboard_unknown_asset_is_404_and_ui_is_not_api() {
    let server = Server::start(&[]);
    for path in ["/ui/x", "/ui/app.js.map", "/ui/..%2Fapp.js", "/ui/"] {
        let (status, h, _) = get(&format!("{}{path}", server.url)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        if path == "/ui/x" {
            assert_secured(&h);
        }
    }
    // The dashboard's routes are not API routes: /openapi.json does not list them.
    let (_, _, doc) = get(&format!("{}/openapi.json", server.url)).await;
    let doc: serde_json::Value = serde_json::from_str(&doc).unwrap();
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.contains_key("/v1/runs"));
    assert!(!paths.contains_key("/"));
    assert!(!paths.keys().any(|p| p.starts_with("/ui")));
}

#[test]
fn dashboard_index_has_no_inline_script_or_style() {
    let html = std::fs::read_to_string(root().join("host/src/api/ui/index.html")).unwrap();
    let lower = html.to_lowercase();
    // Every <script> has a src and no body; no <style>, no style= or on*= attributes.
    for (i, _) in lower.match_indices("<script") {
        let tag_end = i + lower[i..].find('>').unwrap();
        assert!(lower[i..tag_end].contains(" src="), "inline script at {i}");
        assert!(
            lower[tag_end + 1..].starts_with("</script>"),
            "script body at {i}"
        );
    }
    assert!(!lower.contains("<style"));
    assert!(!lower.contains(" style="));
    assert!(!lower.contains("javascript:"));
    let attrs = lower
        .split(|c: char| c.is_whitespace())
        .filter(|w| w.starts_with("on") && w.contains('='));
    assert_eq!(attrs.count(), 0, "inline event handlers");
    // The token is never put in a URL or in storage by the script.
    let js = std::fs::read_to_string(root().join("host/src/api/ui/app.js")).unwrap();
    assert!(!js.contains("localStorage") && !js.contains("sessionStorage"));
}
