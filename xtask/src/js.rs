//! JavaScript plugins: a `plugins/*/` directory with `app.js`, built by componentize-js
//! from the project-local `sdk/js/node_modules` (npm, pinned by `sdk/js/package-lock.json`).

use super::{is_fresh, run};
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Builds every JavaScript plugin in `dirs` to `out/<name>.wasm`.
pub fn build_plugins(root: &Path, dirs: &[PathBuf], out: &Path) -> Result<()> {
    let js: Vec<&PathBuf> = dirs.iter().filter(|d| d.join("app.js").exists()).collect();
    if js.is_empty() {
        return Ok(());
    }
    let tool = componentize_js(root)?;
    for dir in js {
        let name = dir
            .file_name()
            .and_then(|n| n.to_str())
            .context("plugin directory name")?
            .replace('-', "_");
        let source = dir.join("app.js");
        let world = std::fs::read_to_string(&source)?
            .lines()
            .find_map(|l| {
                l.strip_prefix("// corral-world:")
                    .map(|w| w.trim().to_string())
            })
            .unwrap_or_else(|| "agent-plugin".into());
        let target = out.join(format!("{name}.wasm"));
        // componentize-js snapshots a SpiderMonkey: skip when nothing changed.
        let sdk = root.join("sdk/js/corral.js");
        if is_fresh(&target, &[dir.as_path(), &root.join("wit"), &sdk])? {
            continue;
        }
        // From the root, so `app.js` can import `../../sdk/js/corral.js`
        // (componentize-js maps the working directory into the build).
        run(Command::new(&tool)
            .current_dir(root)
            .arg("--wit")
            .arg(root.join("wit"))
            .args(["--world-name", &world, "-o"])
            .arg(&target)
            .arg(source.strip_prefix(root).unwrap_or(&source)))?;
    }
    Ok(())
}

/// componentize-js in `sdk/js/node_modules`, installed with `npm ci` on first use.
pub fn componentize_js(root: &Path) -> Result<PathBuf> {
    let sdk = root.join("sdk/js");
    let tool = sdk.join("node_modules/.bin/componentize-js");
    if tool.exists() {
        return Ok(tool);
    }
    println!(
        "installing componentize-js into {}",
        sdk.join("node_modules").display()
    );
    run(Command::new("npm")
        .current_dir(&sdk)
        .args(["ci", "--no-audit", "--no-fund"]))?;
    Ok(tool)
}
