//! `github-issues`: a connector for a GitHub-style issues API.
//!
//! Config (the pull query, and the push step's config):
//! `{"api": "https://api.github.com", "repo": "owner/name", "state": "open",
//!   "per_page": 50, "token_secret": "GITHUB_TOKEN"}` (`api` defaults to GitHub's,
//! `state` to `open`, `per_page` to 50, the token is optional).
//!
//! - **pull**: `GET {api}/repos/{repo}/issues?state=..&per_page=..&page=N`; the cursor is
//!   the next page number, and a short page is the last. Pull requests (which the issues
//!   API also lists) are skipped. Items: `{"number", "title", "state", "body", "labels",
//!   "url"}`.
//! - **push**: each item `{"title", "body"?, "labels"?}` becomes `POST
//!   {api}/repos/{repo}/issues`; the count is the issues created.
//! - **webhooks**: an `issues` event (`{"action", "issue": {...}}`) becomes one item with
//!   the action; other events become none.

use corral_sdk::http::{self, Response};
use corral_sdk::{Connector, ConnectorInfo, Error, Page, Result, WebhookRequest};
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default = "default_api")]
    api: String,
    repo: String,
    #[serde(default = "default_state")]
    state: String,
    #[serde(default = "default_per_page")]
    per_page: u32,
    #[serde(default)]
    token_secret: Option<String>,
}

fn default_api() -> String {
    "https://api.github.com".into()
}
fn default_state() -> String {
    "open".into()
}
fn default_per_page() -> u32 {
    50
}

impl Config {
    fn parse(value: Value) -> Result<Config> {
        let c: Config = serde_json::from_value(value)
            .map_err(|e| Error::invalid_input(format!("config: {e}")))?;
        let valid = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        };
        match c.repo.split_once('/') {
            Some((owner, name)) if valid(owner) && valid(name) => {}
            _ => return Err(Error::invalid_input("config.repo: `owner/name`")),
        }
        if !valid(&c.state) {
            return Err(Error::invalid_input("config.state: open, closed or all"));
        }
        Ok(c)
    }

    fn issues_url(&self) -> String {
        format!(
            "{}/repos/{}/issues",
            self.api.trim_end_matches('/'),
            self.repo
        )
    }

    fn send(&self, method: &str, url: &str, body: Option<&[u8]>) -> Result<Response> {
        let auth = self
            .token_secret
            .as_ref()
            .map(|name| format!("Bearer ${{secret:{name}}}"));
        let mut headers = vec![
            ("accept", "application/vnd.github+json"),
            ("user-agent", "corral-github-issues"),
        ];
        if body.is_some() {
            headers.push(("content-type", "application/json"));
        }
        if let Some(a) = &auth {
            headers.push(("authorization", a.as_str()));
        }
        http::request(method, url, &headers, body)?.error_for_status()
    }
}

fn issue_item(issue: &Value) -> Value {
    let labels: Vec<Value> = issue
        .get("labels")
        .and_then(Value::as_array)
        .map(|ls| {
            ls.iter()
                .filter_map(|l| l.get("name").or(Some(l)).cloned())
                .collect()
        })
        .unwrap_or_default();
    json!({
        "number": issue.get("number"),
        "title": issue.get("title"),
        "state": issue.get("state"),
        "body": issue.get("body"),
        "labels": labels,
        "url": issue.get("html_url"),
    })
}

struct GithubIssues;

impl Connector for GithubIssues {
    fn info() -> ConnectorInfo {
        ConnectorInfo {
            name: "github-issues".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "A GitHub-style issues API: pull issues, create issues, issue webhooks."
                .into(),
        }
    }

    fn pull(query: Value, cursor: Option<String>) -> Result<Page> {
        let c = Config::parse(query)?;
        let page: u32 = match cursor {
            None => 1,
            Some(p) => p
                .parse()
                .map_err(|_| Error::invalid_input(format!("cursor `{p}` is not a page")))?,
        };
        let per_page = c.per_page.clamp(1, 100);
        let url = format!(
            "{}?state={}&per_page={per_page}&page={page}",
            c.issues_url(),
            c.state
        );
        let listed: Vec<Value> = c.send("GET", &url, None)?.json()?;
        let full = listed.len() >= per_page as usize;
        let items = listed
            .iter()
            .filter(|i| i.get("pull_request").is_none())
            .map(issue_item)
            .collect();
        Ok(Page {
            items,
            next_cursor: full.then(|| (page + 1).to_string()),
        })
    }

    fn push(items: Vec<Value>) -> Result<u32> {
        let c = Config::parse(corral_sdk::connector_config()?)?;
        let mut created = 0u32;
        for item in items {
            let Some(title) = item.get("title").and_then(Value::as_str) else {
                return Err(Error::invalid_input("every item needs a `title`"));
            };
            let body = json!({
                "title": title,
                "body": item.get("body").cloned().unwrap_or(Value::Null),
                "labels": item.get("labels").cloned().unwrap_or(json!([])),
            });
            let bytes = serde_json::to_vec(&body)
                .map_err(|e| Error::permanent(format!("cannot encode the issue: {e}")))?;
            c.send("POST", &c.issues_url(), Some(&bytes))?;
            created += 1;
        }
        Ok(created)
    }

    fn handle_webhook(request: WebhookRequest) -> Result<Vec<Value>> {
        let event: Value = serde_json::from_slice(&request.body)
            .map_err(|e| Error::invalid_input(format!("the delivery is not JSON: {e}")))?;
        let Some(issue) = event.get("issue") else {
            return Ok(Vec::new());
        };
        let mut item = issue_item(issue);
        if let Some(obj) = item.as_object_mut() {
            obj.insert(
                "action".into(),
                event.get("action").cloned().unwrap_or(Value::Null),
            );
        }
        Ok(vec![item])
    }
}

corral_sdk::export_connector!(GithubIssues);
