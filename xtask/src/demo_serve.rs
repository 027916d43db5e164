//! `demo --serve`: the ETL demo on the dashboard (`examples/etl/serve.sh` with the release
//! `corral`): serves on 127.0.0.1:8080 with the demo plugins and pipeline stored in tenant
//! `default`, prints the URL and the admin token, and keeps running until Ctrl-C.

use anyhow::Result;
use std::path::Path;
use std::process::Command;

pub fn demo_serve(root: &Path) -> Result<()> {
    crate::run(Command::new(crate::cargo()).current_dir(root).args([
        "build",
        "--release",
        "-p",
        "corral",
    ]))?;
    crate::run(
        Command::new("bash")
            .arg(root.join("examples/etl/serve.sh"))
            .env("CORRAL", root.join("target/release/corral"))
            .current_dir(root),
    )
}
