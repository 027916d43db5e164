//! {{name}}: a Corral connector (records in and out of an outside system).
//! This one serves a fixed list, two records a page; replace `RECORDS` with your system.

use corral_sdk::{ConnectorInfo, Error, Page, Result};
use serde_json::{Value, json};

const RECORDS: [&str; 3] = ["alpha", "beta", "gamma"];
const PAGE_SIZE: usize = 2;

struct Plugin;

impl corral_sdk::Connector for Plugin {
    fn info() -> ConnectorInfo {
        ConnectorInfo {
            name: "{{name}}".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Reads a fixed list of records, two a page.".into(),
        }
    }

    fn pull(_query: Value, cursor: Option<String>) -> Result<Page> {
        let start: usize = match cursor {
            None => 0,
            Some(c) => c
                .parse()
                .map_err(|_| Error::invalid_input(format!("bad cursor {c:?}")))?,
        };
        let items: Vec<Value> = RECORDS
            .iter()
            .enumerate()
            .skip(start)
            .take(PAGE_SIZE)
            .map(|(i, name)| json!({"id": i, "name": name}))
            .collect();
        let next = start + items.len();
        Ok(Page {
            items,
            next_cursor: (next < RECORDS.len()).then(|| next.to_string()),
        })
    }
}

corral_sdk::export_connector!(Plugin);
