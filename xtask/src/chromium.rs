//! The browser the test suite drives (`tests/all/browser/`): Debian's `chromium`.

use anyhow::{Result, bail};
use std::path::Path;
use std::process::Command;

/// Makes sure `chromium` is on PATH before the tests run: installs Debian's package when
/// it is missing and we are root with apt, and otherwise fails saying what to install.
/// `CORRAL_SKIP_BROWSER=1` skips the browser tests, and this check with them.
pub fn ensure() -> Result<()> {
    if std::env::var("CORRAL_SKIP_BROWSER").is_ok_and(|v| v == "1") {
        println!("CORRAL_SKIP_BROWSER=1: the browser tests will not run");
        return Ok(());
    }
    if on_path("chromium") {
        return Ok(());
    }
    if !is_root() || !on_path("apt-get") {
        bail!(
            "the browser tests need Debian's chromium: install it (`sudo apt-get install \
             chromium`), or set CORRAL_SKIP_BROWSER=1 to skip them"
        );
    }
    println!("installing chromium for the browser tests (apt-get)");
    for args in [
        &["update", "-qq"][..],
        &["install", "-y", "-qq", "chromium"][..],
    ] {
        super::run(
            Command::new("apt-get")
                .args(args)
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )?;
    }
    if !on_path("chromium") {
        bail!("apt-get installed chromium but it is not on PATH");
    }
    Ok(())
}

fn on_path(command: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(command).is_file()))
}

/// True when running as root: /proc/self belongs to the process's effective user.
fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(Path::new("/proc/self")).is_ok_and(|m| m.uid() == 0)
}
