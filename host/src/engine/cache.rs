//! Compiled components on disk, keyed by component digest and engine settings, and the
//! digests of plugin files the host has read, keyed by the file's identity.
//!
//! Deserializing compiled code runs it as native code, so the host must never
//! deserialize bytes it did not produce. The threat is someone who can write the cache
//! directory (replace, add or edit entries) but cannot read the random key only this
//! directory's owner holds (`cache.key`, mode 0600). A key file that is not this
//! process's user's alone (someone else's, a link, readable by others) is replaced by a
//! new key: whoever put it there could forge every tag.
//!
//! Each entry is two files: `<digest>-<engine>.cwasm`, the artifact exactly as
//! `Component::serialize` made it (so it can be mapped lazily, as wasmtime maps its own),
//! and `<digest>-<engine>.tag`, two HMAC-SHA256 tags under the key:
//!
//! - the **code tag**, over every byte of the artifact, computed once when it is written;
//! - the **identity tag**, over the artifact file's identity: device, inode, size,
//!   modification and status-change times (nanoseconds). Any write to the file, a
//!   `touch`, or a replacement changes its status-change time (`ctime`), which no
//!   unprivileged process can set back, and a replacement also changes the inode.
//!
//! A load opens the artifact, takes its identity from the open descriptor (`fstat`),
//! and checks the identity tag: 64 bytes of HMAC instead of the whole artifact. It also
//! requires the file to be owned by this process's user and writable by no one else, so no
//! one else can change the bytes between the check and their use; it then maps that
//! same open file (`/proc/self/fd/N`, so a rename in between cannot swap it). When the
//! identity tag does not verify (the file was copied, restored from a backup, or
//! tampered with), the slow path reads the artifact into memory, checks the code tag
//! over what it read, deserializes that copy and writes a fresh identity tag; an entry
//! whose code tag does not verify is ignored and recompiled.
//!
//! Plugin files get the same treatment: `file-<hash of the path>.rec` holds the digest
//! of the file's bytes and an HMAC over the path, the file's identity and the digest, so a
//! new process loads an unchanged plugin file from the cache without reading or hashing it.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use wasmtime::component::Component;

type HmacSha256 = Hmac<Sha256>;
const TAG_LEN: usize = 32;
const DIGEST_HEX_LEN: usize = 64;

/// Domain separators, so one kind of tag can never stand for another.
const CODE: &[u8] = b"corral-cache-code\0";
const IDENT: &[u8] = b"corral-cache-ident\0";
const FILE: &[u8] = b"corral-plugin-file\0";

/// What identifies one version of a file: any change to its bytes changes `ctime`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct FileIdent {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
    uid: u32,
    mode: u32,
}

impl FileIdent {
    /// The identity of an open (or stat'ed) file; `None` off Unix.
    pub(super) fn of(meta: &std::fs::Metadata) -> Option<FileIdent> {
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            Some(FileIdent {
                dev: meta.dev(),
                ino: meta.ino(),
                size: meta.size(),
                mtime: (meta.mtime(), meta.mtime_nsec()),
                ctime: (meta.ctime(), meta.ctime_nsec()),
                uid: meta.uid(),
                mode: meta.mode(),
            })
        }
        #[cfg(not(unix))]
        {
            let _ = meta;
            None
        }
    }

    fn feed(&self, mac: &mut HmacSha256) {
        for n in [self.dev, self.ino, self.size] {
            mac.update(&n.to_le_bytes());
        }
        for (s, ns) in [self.mtime, self.ctime] {
            mac.update(&s.to_le_bytes());
            mac.update(&ns.to_le_bytes());
        }
    }
}

pub(super) struct DiskCache {
    dir: PathBuf,
    key: [u8; 32],
    /// This process's user, the key's owner: only files of this user are mapped on the
    /// fast path.
    owner: Option<u32>,
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
            owner: effective_uid(),
            engine_hash: format!("{:016x}", hasher.finish()),
        })
    }

    fn path(&self, digest_hex: &str, ext: &str) -> PathBuf {
        self.dir
            .join(format!("{digest_hex}-{}.{ext}", self.engine_hash))
    }

    fn mac(&self, domain: &[u8], digest_hex: &str) -> Option<HmacSha256> {
        let mut mac = HmacSha256::new_from_slice(&self.key).ok()?;
        mac.update(domain);
        mac.update(digest_hex.as_bytes());
        mac.update(self.engine_hash.as_bytes());
        Some(mac)
    }

    fn ident_tag(&self, digest_hex: &str, ident: &FileIdent) -> Option<HmacSha256> {
        let mut mac = self.mac(IDENT, digest_hex)?;
        ident.feed(&mut mac);
        Some(mac)
    }

    /// Whether only the key's owner can change the file: the condition for using it
    /// after the check rather than a private copy.
    fn owned(&self, ident: &FileIdent) -> bool {
        self.owner == Some(ident.uid) && ident.mode & 0o022 == 0
    }

    /// The cached component if its entry is unchanged since this host wrote it: the
    /// fast path alone (a small read, an `fstat` and a lazy map), cheap enough for an
    /// async task.
    pub(super) fn get_mapped(
        &self,
        engine: &wasmtime::Engine,
        digest_hex: &str,
    ) -> Option<Component> {
        let file = open_nonblocking(&self.path(digest_hex, "cwasm")).ok()?;
        let tags = read_small(&self.path(digest_hex, "tag"), 2 * TAG_LEN)?;
        self.unchanged(digest_hex, &file, &tags)
            .then(|| map_open_file(engine, &file))
            .flatten()
    }

    /// Whether the open artifact is the file this host last tagged, and only the key's
    /// owner can change it.
    fn unchanged(&self, digest_hex: &str, file: &std::fs::File, tags: &[u8]) -> bool {
        let Some(ident_tag) = tags.get(TAG_LEN..) else {
            return false;
        };
        file.metadata()
            .ok()
            .and_then(|m| FileIdent::of(&m))
            .filter(|i| self.owned(i))
            .and_then(|ident| self.ident_tag(digest_hex, &ident))
            .is_some_and(|mac| mac.verify_slice(ident_tag).is_ok())
    }

    /// The cached component, if there is a valid entry: the fast path, else a private
    /// copy checked in full (which can take a while for a big artifact: call it off the
    /// async workers).
    pub(super) fn get(&self, engine: &wasmtime::Engine, digest_hex: &str) -> Option<Component> {
        let mut file = open_nonblocking(&self.path(digest_hex, "cwasm")).ok()?;
        let tags = read_small(&self.path(digest_hex, "tag"), 2 * TAG_LEN)?;
        let unchanged = self.unchanged(digest_hex, &file, &tags);
        // Mapping fails off Linux or without /proc: then the full check below.
        if unchanged && let Some(component) = map_open_file(engine, &file) {
            return Some(component);
        }
        let code_tag = tags.get(..TAG_LEN)?;
        // Not a device or a FIFO someone put in its place: those never end.
        let meta = file.metadata().ok().filter(|m| m.is_file())?;
        let before = FileIdent::of(&meta);
        let mut code = Vec::new();
        file.read_to_end(&mut code).ok()?;
        let mut mac = self.mac(CODE, digest_hex)?;
        mac.update(&code);
        // Constant-time comparison.
        mac.verify_slice(code_tag).ok()?;
        let component = deserialize(engine, &code)?;
        // The bytes are good: tag the file as it is now, if it did not change while
        // being read, so the next load takes the fast path (unless its tag is already
        // right, and only mapping failed).
        let after = file.metadata().ok().and_then(|m| FileIdent::of(&m));
        if !unchanged && let Some(ident) = before.filter(|i| self.owned(i) && after == before) {
            self.write_tags(digest_hex, code_tag, &ident);
        }
        Some(component)
    }

    /// Stores a compiled component. Failures only cost a recompile later, so they are
    /// logged, not returned.
    pub(super) fn put(&self, digest_hex: &str, component: &Component) {
        let result = (|| -> anyhow::Result<()> {
            let code = component
                .serialize()
                .map_err(|e| anyhow::anyhow!("serializing: {e}"))?;
            let mut mac = self
                .mac(CODE, digest_hex)
                .ok_or_else(|| anyhow::anyhow!("bad cache key"))?;
            mac.update(&code);
            let code_tag = mac.finalize().into_bytes();
            let mut tmp = tempfile::NamedTempFile::new_in(&self.dir)?;
            tmp.write_all(&code)?;
            let file = tmp.persist(self.path(digest_hex, "cwasm"))?;
            // The identity after the rename (a rename changes `ctime`), from the file
            // this process wrote: nobody else could write it (mode 0600).
            if let Some(ident) = FileIdent::of(&file.metadata()?) {
                self.write_tags(digest_hex, &code_tag, &ident);
            }
            Ok(())
        })();
        if let Err(e) = result {
            tracing::warn!("could not cache compiled component {digest_hex}: {e}");
        }
    }

    fn write_tags(&self, digest_hex: &str, code_tag: &[u8], ident: &FileIdent) {
        let Some(ident_tag) = self.ident_tag(digest_hex, ident) else {
            return;
        };
        let mut tags = code_tag.to_vec();
        tags.extend_from_slice(&ident_tag.finalize().into_bytes());
        if let Err(e) = write_atomically(&self.dir, &self.path(digest_hex, "tag"), &tags) {
            tracing::warn!("could not tag compiled component {digest_hex}: {e}");
        }
    }

    fn file_record(&self, path: &Path) -> PathBuf {
        let name = hex::encode(Sha256::digest(path.as_os_str().as_encoded_bytes()));
        self.dir
            .join(format!("file-{}.rec", name.get(..32).unwrap_or(&name)))
    }

    fn file_tag(&self, path: &Path, ident: &FileIdent, digest_hex: &str) -> Option<HmacSha256> {
        let mut mac = self.mac(FILE, digest_hex)?;
        let path = path.as_os_str().as_encoded_bytes();
        mac.update(&u64::try_from(path.len()).unwrap_or(u64::MAX).to_le_bytes());
        mac.update(path);
        ident.feed(&mut mac);
        Some(mac)
    }

    /// The digest recorded for the plugin file at `path`, if the file is unchanged
    /// since it was recorded.
    pub(super) fn file_digest(&self, path: &Path, ident: &FileIdent) -> Option<String> {
        let record = read_small(&self.file_record(path), DIGEST_HEX_LEN + TAG_LEN)?;
        let (digest_hex, tag) = record.split_at_checked(DIGEST_HEX_LEN)?;
        let digest_hex = std::str::from_utf8(digest_hex).ok()?;
        self.file_tag(path, ident, digest_hex)?
            .verify_slice(tag)
            .ok()?;
        Some(digest_hex.to_string())
    }

    /// Records the digest of the plugin file at `path` as it is now (`ident`).
    pub(super) fn record_file(&self, path: &Path, ident: &FileIdent, digest_hex: &str) {
        let Some(tag) = self.file_tag(path, ident, digest_hex) else {
            return;
        };
        let mut record = digest_hex.as_bytes().to_vec();
        record.extend_from_slice(&tag.finalize().into_bytes());
        if let Err(e) = write_atomically(&self.dir, &self.file_record(path), &record) {
            tracing::warn!("could not record the digest of {}: {e}", path.display());
        }
    }
}

/// Opens a file for reading without waiting on what is not a regular file: whoever can
/// write the cache directory can put a FIFO there, whose opening would wait for a writer.
/// Non-blocking changes nothing for a regular file.
pub(super) fn open_nonblocking(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NONBLOCK);
    }
    options.open(path)
}

/// A small file of the cache directory (tags, a file record), `None` if it is longer
/// than `max` bytes: never read further than that, whatever stands at `path`.
fn read_small(path: &Path, max: usize) -> Option<Vec<u8>> {
    let file = open_nonblocking(path).ok()?;
    let mut bytes = Vec::with_capacity(max);
    file.take(u64::try_from(max).ok()?.saturating_add(1))
        .read_to_end(&mut bytes)
        .ok()?;
    (bytes.len() <= max).then_some(bytes)
}

fn write_atomically(dir: &Path, path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.persist(path)?;
    Ok(())
}

/// Maps the artifact this process opened and checked, not whatever the path names now.
#[allow(unsafe_code)]
fn map_open_file(engine: &wasmtime::Engine, file: &std::fs::File) -> Option<Component> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let path = format!("/proc/self/fd/{}", file.as_raw_fd());
        // SAFETY: `path` names the open file whose identity tag, made with a key only
        // this directory holds, the caller verified: bytes this host wrote with
        // `Component::serialize` and that no one else can write (see `DiskCache::owned`).
        // wasmtime additionally checks the engine settings embedded in the artifact.
        unsafe { Component::deserialize_file(engine, path) }.ok()
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (engine, file);
        None
    }
}

#[allow(unsafe_code)]
fn deserialize(engine: &wasmtime::Engine, code: &[u8]) -> Option<Component> {
    // SAFETY: `code` was produced by `Component::serialize` in this data directory: its
    // HMAC tag, made with a key only this directory holds, was verified by the caller
    // over this very copy. wasmtime additionally checks the engine settings embedded in
    // the artifact.
    unsafe { Component::deserialize(engine, code) }.ok()
}

/// This process's effective user (`None` off Unix).
#[allow(unsafe_code)]
fn effective_uid() -> Option<u32> {
    #[cfg(unix)]
    {
        // SAFETY: geteuid has no preconditions and cannot fail.
        Some(unsafe { libc::geteuid() })
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// The key at `path` if it is a 32-byte regular file (not a link) that this process's
/// user owns and no one else can read or write.
fn read_own_key(path: &Path) -> Option<[u8; 32]> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW);
    }
    let file = options.open(path).ok()?;
    let meta = file.metadata().ok()?;
    if !meta.is_file() {
        return None;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if Some(meta.uid()) != effective_uid() || meta.mode() & 0o077 != 0 {
            return None;
        }
    }
    let mut bytes = Vec::with_capacity(32);
    file.take(33).read_to_end(&mut bytes).ok()?;
    <[u8; 32]>::try_from(bytes.as_slice()).ok()
}

fn load_or_create_key(path: &Path) -> anyhow::Result<[u8; 32]> {
    if let Some(key) = read_own_key(path) {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A FIFO named like an entry: `mkfifo` it, if the system has the command.
    #[cfg(unix)]
    fn fifo(path: &Path) -> bool {
        std::process::Command::new("mkfifo")
            .arg(path)
            .status()
            .is_ok_and(|s| s.success())
    }

    #[cfg(unix)]
    #[test]
    fn a_key_file_others_could_have_written_or_read_is_replaced() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.key");
        let key = load_or_create_key(&path).unwrap();
        assert_eq!(load_or_create_key(&path).unwrap(), key, "kept");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let replaced = load_or_create_key(&path).unwrap();
        assert_ne!(replaced, key, "a key others can read");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let known = dir.path().join("known");
        std::fs::write(&known, [7u8; 32]).unwrap();
        std::fs::set_permissions(&known, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink(&known, &path).unwrap();
        assert_ne!(load_or_create_key(&path).unwrap(), [7u8; 32], "a link");
        assert_eq!(
            std::fs::read(&known).unwrap(),
            [7u8; 32],
            "its target untouched"
        );
    }

    #[test]
    fn entries_that_are_not_small_regular_files_are_ignored_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let engine = wasmtime::Engine::default();
        let cache = DiskCache::open(&dir.path().join("cache"), &engine).unwrap();
        let digest_hex = "ab".repeat(32);
        let tag = cache.path(&digest_hex, "tag");
        std::fs::write(&tag, vec![0u8; 1 << 20]).unwrap();
        assert!(
            read_small(&tag, 2 * TAG_LEN).is_none(),
            "read past its bound"
        );
        std::fs::write(&tag, [0u8; 2 * TAG_LEN]).unwrap();
        assert_eq!(read_small(&tag, 2 * TAG_LEN).unwrap().len(), 2 * TAG_LEN);

        #[cfg(unix)]
        {
            // Opening a FIFO for reading would wait for a writer that never comes.
            if !fifo(&cache.path(&digest_hex, "cwasm")) {
                return;
            }
            assert!(cache.get_mapped(&engine, &digest_hex).is_none());
            assert!(cache.get(&engine, &digest_hex).is_none());
            let plugin = dir.path().join("plugin.wasm");
            std::fs::write(&plugin, b"\0asm").unwrap();
            let ident = FileIdent::of(&std::fs::metadata(&plugin).unwrap()).unwrap();
            assert!(fifo(&cache.file_record(&plugin)));
            assert!(cache.file_digest(&plugin, &ident).is_none());
        }
    }
}
