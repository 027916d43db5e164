//! Compiled components on disk, keyed by component digest and engine settings.
//!
//! Deserializing compiled code runs it as native code, so the host must never
//! deserialize bytes it did not produce. Every entry carries an HMAC-SHA256 tag made
//! with a random key that only this data directory holds; an entry whose tag does not
//! verify (tampered, truncated, or written by someone else) is ignored and recompiled.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use wasmtime::component::Component;

type HmacSha256 = Hmac<Sha256>;
const TAG_LEN: usize = 32;

pub(super) struct DiskCache {
    dir: PathBuf,
    key: [u8; 32],
    engine_hash: String,
}

impl DiskCache {
    pub(super) fn open(dir: &Path, engine: &wasmtime::Engine) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)
            .map_err(|e| anyhow::anyhow!("creating cache dir {}: {e}", dir.display()))?;
        let key = load_or_create_key(&dir.join("cache.key"))?;
        let mut hasher = std::hash::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        env!("CARGO_PKG_VERSION").hash(&mut hasher);
        Ok(DiskCache {
            dir: dir.to_path_buf(),
            key,
            engine_hash: format!("{:016x}", hasher.finish()),
        })
    }

    fn path(&self, digest_hex: &str) -> PathBuf {
        self.dir
            .join(format!("{digest_hex}-{}.cwasm", self.engine_hash))
    }

    fn mac(&self, digest_hex: &str) -> Option<HmacSha256> {
        let mut mac = HmacSha256::new_from_slice(&self.key).ok()?;
        mac.update(digest_hex.as_bytes());
        mac.update(self.engine_hash.as_bytes());
        Some(mac)
    }

    /// The cached component, if there is a valid entry.
    pub(super) fn get(&self, engine: &wasmtime::Engine, digest_hex: &str) -> Option<Component> {
        let bytes = std::fs::read(self.path(digest_hex)).ok()?;
        let (tag, code) = bytes.split_at_checked(TAG_LEN)?;
        let mut mac = self.mac(digest_hex)?;
        mac.update(code);
        // Constant-time comparison.
        mac.verify_slice(tag).ok()?;
        deserialize(engine, code)
    }

    /// Stores a compiled component. Failures only cost a recompile later, so they are
    /// logged, not returned.
    pub(super) fn put(&self, digest_hex: &str, component: &Component) {
        let result = (|| -> anyhow::Result<()> {
            let code = component
                .serialize()
                .map_err(|e| anyhow::anyhow!("serializing: {e}"))?;
            let mut mac = self
                .mac(digest_hex)
                .ok_or_else(|| anyhow::anyhow!("bad cache key"))?;
            mac.update(&code);
            let tag = mac.finalize().into_bytes();
            let mut tmp = tempfile::NamedTempFile::new_in(&self.dir)?;
            tmp.write_all(&tag)?;
            tmp.write_all(&code)?;
            tmp.persist(self.path(digest_hex))?;
            Ok(())
        })();
        if let Err(e) = result {
            tracing::warn!("could not cache compiled component {digest_hex}: {e}");
        }
    }
}

#[allow(unsafe_code)]
fn deserialize(engine: &wasmtime::Engine, code: &[u8]) -> Option<Component> {
    // SAFETY: `code` was produced by `Component::serialize` in this data directory: its
    // HMAC tag, made with a key only this directory holds, was verified by the caller.
    // wasmtime additionally checks the engine settings embedded in the artifact.
    unsafe { Component::deserialize(engine, code) }.ok()
}

fn load_or_create_key(path: &Path) -> anyhow::Result<[u8; 32]> {
    if let Ok(bytes) = std::fs::read(path)
        && let Ok(key) = <[u8; 32]>::try_from(bytes.as_slice())
    {
        return Ok(key);
    }
    let key: [u8; 32] = rand::random();
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(&key)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    tmp.persist(path)
        .map_err(|e| anyhow::anyhow!("writing cache key {}: {e}", path.display()))?;
    Ok(key)
}
