//! The scratch-disk quota (SECURITY-CASES RES-16): how many bytes and entries (files,
//! directories, links) a guest may create under its preopened directories in one
//! invocation, enforced when it writes, never by filling the disk first.
//!
//! `wasi:filesystem/types` is linked with [`ScratchFs`], which wraps wasmtime-wasi's own
//! implementation and delegates every method to it, charging the quota on the way:
//!
//! - **bytes**: a positioned `write` and `set-size` are charged for how far they grow the
//!   file past its current size (a hole counts, so sparse files cannot cheat); everything
//!   written through `write-via-stream` / `append-via-stream` is charged in full (an
//!   overwrite through a stream counts again). Truncation (`set-size` smaller, or `open-at`
//!   with `truncate`) gives the freed bytes back. Deleting a file does **not** give its
//!   bytes back: a guest could still hold it open, and its blocks would stay on the disk.
//! - **entries**: `open-at` that creates a file, `create-directory-at`, `symlink-at` and
//!   `link-at` each take one; `unlink-file-at` and `remove-directory-at` give one back.
//!
//! A write past the byte quota is cut short at the quota, then fails with
//! `insufficient-space` (ENOSPC); an entry past the cap fails with `quota` (EDQUOT). The
//! guest sees an ordinary filesystem error; if it traps because of it, the invocation
//! fails with `RESOURCE_LIMIT`.
//!
//! The directories themselves come from a [`ScratchPool`]: creating and removing a
//! directory costs tens of microseconds on a quiet ext4 and milliseconds when the disk
//! is busy (a synchronous TRIM with `discard`), more than the rest of an invocation. Most
//! plugins never open `/work`, so a directory the guest did not touch at all (no call of
//! `wasi:filesystem/types`, see [`ScratchQuota::touched`]) is still exactly what the host
//! created, empty, and serves the next invocation; one it touched is removed, off the call
//! path, and never handed out again.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use wasmtime::component::{HasData, Linker, Resource};
use wasmtime_wasi::filesystem::{Descriptor, WasiFilesystemCtxView};
use wasmtime_wasi::p2::bindings::filesystem::types::{
    self, ErrorCode, HostDescriptor, HostDirectoryEntryStream,
};
use wasmtime_wasi::p2::{
    DynOutputStream, FsError, FsResult, OutputStream, Pollable, StreamError, StreamResult,
};

/// The default bytes a guest may write under `/work` per invocation.
pub const DEFAULT_BYTES: u64 = 64 << 20;
/// The default entries (files, directories, links) a guest may create per invocation.
pub const DEFAULT_ENTRIES: u64 = 1_000;

/// Why a write or create was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum QuotaExceeded {
    /// The byte quota.
    #[error("scratch-disk quota of {0} bytes exceeded")]
    Bytes(u64),
    /// The entry cap.
    #[error("scratch-disk quota of {0} files and directories exceeded")]
    Entries(u64),
}

impl QuotaExceeded {
    /// What the guest sees.
    fn code(self) -> ErrorCode {
        match self {
            QuotaExceeded::Bytes(_) => ErrorCode::InsufficientSpace,
            QuotaExceeded::Entries(_) => ErrorCode::Quota,
        }
    }
}

const REFUSED_NONE: u8 = 0;
const REFUSED_BYTES: u8 = 1;
const REFUSED_ENTRIES: u8 = 2;

/// One invocation's quota: shared by its Store and the output streams it opened.
#[derive(Debug)]
pub struct ScratchQuota {
    max_bytes: u64,
    max_entries: u64,
    bytes: AtomicU64,
    entries: AtomicU64,
    refused: AtomicU8,
    touched: AtomicBool,
}

impl ScratchQuota {
    /// A fresh quota of `max_bytes` and `max_entries`.
    pub fn new(max_bytes: u64, max_entries: u64) -> Arc<Self> {
        Arc::new(ScratchQuota {
            max_bytes,
            max_entries,
            bytes: AtomicU64::new(0),
            entries: AtomicU64::new(0),
            refused: AtomicU8::new(REFUSED_NONE),
            touched: AtomicBool::new(false),
        })
    }

    /// Whether the guest made any `wasi:filesystem/types` call (a look counts: even
    /// reading a directory can change its access time, which a later guest could see).
    /// Every descriptor the guest can reach is under its preopens, so a scratch
    /// directory of an untouched invocation is exactly as the host made it.
    pub fn touched(&self) -> bool {
        self.touched.load(Ordering::Relaxed)
    }

    /// Bytes charged so far.
    pub fn bytes_used(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Entries charged so far.
    pub fn entries_used(&self) -> u64 {
        self.entries.load(Ordering::Relaxed)
    }

    /// The quota the guest ran into, if it ran into one.
    pub fn refusal(&self) -> Option<QuotaExceeded> {
        match self.refused.load(Ordering::Relaxed) {
            REFUSED_BYTES => Some(QuotaExceeded::Bytes(self.max_bytes)),
            REFUSED_ENTRIES => Some(QuotaExceeded::Entries(self.max_entries)),
            _ => None,
        }
    }

    fn remaining_bytes(&self) -> u64 {
        self.max_bytes.saturating_sub(self.bytes_used())
    }

    fn charge(counter: &AtomicU64, max: u64, n: u64) -> bool {
        counter
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                used.checked_add(n).filter(|total| *total <= max)
            })
            .is_ok()
    }

    fn credit(counter: &AtomicU64, n: u64) {
        let _ = counter.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
            Some(used.saturating_sub(n))
        });
    }

    /// Takes `n` bytes, or refuses (and remembers the refusal).
    fn charge_bytes(&self, n: u64) -> Result<(), QuotaExceeded> {
        if Self::charge(&self.bytes, self.max_bytes, n) {
            Ok(())
        } else {
            Err(self.refuse_bytes())
        }
    }

    /// Remembers a refusal for bytes.
    fn refuse_bytes(&self) -> QuotaExceeded {
        self.refused.store(REFUSED_BYTES, Ordering::Relaxed);
        QuotaExceeded::Bytes(self.max_bytes)
    }

    fn credit_bytes(&self, n: u64) {
        Self::credit(&self.bytes, n);
    }

    /// Takes one entry, or refuses (and remembers the refusal).
    fn charge_entry(&self) -> Result<(), QuotaExceeded> {
        if Self::charge(&self.entries, self.max_entries, 1) {
            Ok(())
        } else {
            self.refused.store(REFUSED_ENTRIES, Ordering::Relaxed);
            Err(QuotaExceeded::Entries(self.max_entries))
        }
    }

    fn credit_entry(&self) {
        Self::credit(&self.entries, 1);
    }
}

fn refused(e: QuotaExceeded) -> FsError {
    e.code().into()
}

impl ScratchQuota {
    /// Runs `create` (which makes one entry) under the entry cap: charged first, given
    /// back if the create fails.
    async fn creating<T>(&self, create: impl Future<Output = FsResult<T>>) -> FsResult<T> {
        self.charge_entry().map_err(refused)?;
        let result = create.await;
        if result.is_err() {
            self.credit_entry();
        }
        result
    }
}

/// A second handle to the same descriptor, for a look (`stat`) before the real call.
fn again(fd: &Resource<Descriptor>) -> Resource<Descriptor> {
    Resource::new_borrow(fd.rep())
}

fn len64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// `wasi:filesystem/types` for one Store: wasmtime-wasi's implementation, with the quota.
pub struct ScratchFs<'a> {
    fs: WasiFilesystemCtxView<'a>,
    quota: &'a Arc<ScratchQuota>,
}

impl<'a> ScratchFs<'a> {
    /// The view over a Store's filesystem context, resource table and quota.
    pub fn new(fs: WasiFilesystemCtxView<'a>, quota: &'a Arc<ScratchQuota>) -> Self {
        // The linker builds this view for every call of the interface (see
        // `add_to_linker`): the one place that sees them all.
        quota.touched.store(true, Ordering::Relaxed);
        ScratchFs { fs, quota }
    }

    /// Replaces a freshly opened output stream by one that charges what goes through it.
    fn counted(
        &mut self,
        stream: Resource<DynOutputStream>,
    ) -> FsResult<Resource<DynOutputStream>> {
        let inner: DynOutputStream = self.fs.table.delete(stream)?;
        let counted: DynOutputStream = Box::new(CountingStream {
            inner,
            quota: self.quota.clone(),
        });
        Ok(self.fs.table.push(counted)?)
    }
}

/// The `HasData` for linking [`ScratchFs`].
pub struct ScratchFsData;

impl HasData for ScratchFsData {
    type Data<'a> = ScratchFs<'a>;
}

/// Links `wasi:filesystem/types` with the quota over what `add_to_linker_async` linked:
/// every function of the interface is replaced (the resource types are the same), the
/// rest of WASI is untouched.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> ScratchFs<'_>,
) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let result = types::add_to_linker::<T, ScratchFsData>(linker, get);
    linker.allow_shadowing(false);
    result
}

impl types::Host for ScratchFs<'_> {
    fn convert_error_code(&mut self, err: FsError) -> wasmtime::Result<ErrorCode> {
        types::Host::convert_error_code(&mut self.fs, err)
    }

    fn filesystem_error_code(
        &mut self,
        err: Resource<wasmtime::Error>,
    ) -> wasmtime::Result<Option<ErrorCode>> {
        if let Some(q) = self.fs.table.get(&err)?.downcast_ref::<QuotaExceeded>() {
            return Ok(Some(q.code()));
        }
        types::Host::filesystem_error_code(&mut self.fs, err)
    }
}

impl HostDescriptor for ScratchFs<'_> {
    async fn advise(
        &mut self,
        fd: Resource<types::Descriptor>,
        offset: types::Filesize,
        len: types::Filesize,
        advice: types::Advice,
    ) -> FsResult<()> {
        self.fs.advise(fd, offset, len, advice).await
    }

    async fn sync_data(&mut self, fd: Resource<types::Descriptor>) -> FsResult<()> {
        self.fs.sync_data(fd).await
    }

    async fn get_flags(
        &mut self,
        fd: Resource<types::Descriptor>,
    ) -> FsResult<types::DescriptorFlags> {
        self.fs.get_flags(fd).await
    }

    async fn get_type(
        &mut self,
        fd: Resource<types::Descriptor>,
    ) -> FsResult<types::DescriptorType> {
        self.fs.get_type(fd).await
    }

    async fn set_size(
        &mut self,
        fd: Resource<types::Descriptor>,
        size: types::Filesize,
    ) -> FsResult<()> {
        let current = self.fs.stat(again(&fd)).await?.size;
        let growth = size.saturating_sub(current);
        self.quota.charge_bytes(growth).map_err(refused)?;
        match self.fs.set_size(fd, size).await {
            Ok(()) => {
                self.quota.credit_bytes(current.saturating_sub(size));
                Ok(())
            }
            Err(e) => {
                self.quota.credit_bytes(growth);
                Err(e)
            }
        }
    }

    async fn set_times(
        &mut self,
        fd: Resource<types::Descriptor>,
        atim: types::NewTimestamp,
        mtim: types::NewTimestamp,
    ) -> FsResult<()> {
        self.fs.set_times(fd, atim, mtim).await
    }

    async fn read(
        &mut self,
        fd: Resource<types::Descriptor>,
        len: types::Filesize,
        offset: types::Filesize,
    ) -> FsResult<(Vec<u8>, bool)> {
        self.fs.read(fd, len, offset).await
    }

    async fn write(
        &mut self,
        fd: Resource<types::Descriptor>,
        mut buf: Vec<u8>,
        offset: types::Filesize,
    ) -> FsResult<types::Filesize> {
        let size = self.fs.stat(again(&fd)).await?.size;
        // The file may grow to `size + remaining`: a write reaching past that is cut
        // short there (a short write, as on a full disk), or refused when nothing fits.
        let limit = size.saturating_add(self.quota.remaining_bytes());
        let end = offset.saturating_add(len64(buf.len()));
        if end > limit {
            if offset >= limit && !buf.is_empty() {
                return Err(refused(self.quota.refuse_bytes()));
            }
            buf.truncate(usize::try_from(limit.saturating_sub(offset)).unwrap_or(usize::MAX));
        }
        let end = offset.saturating_add(len64(buf.len()));
        let growth = end.saturating_sub(size);
        self.quota.charge_bytes(growth).map_err(refused)?;
        match self.fs.write(fd, buf, offset).await {
            Ok(written) => {
                let grew = offset.saturating_add(written).saturating_sub(size);
                self.quota.credit_bytes(growth.saturating_sub(grew));
                Ok(written)
            }
            Err(e) => {
                self.quota.credit_bytes(growth);
                Err(e)
            }
        }
    }

    async fn read_directory(
        &mut self,
        fd: Resource<types::Descriptor>,
    ) -> FsResult<Resource<types::DirectoryEntryStream>> {
        self.fs.read_directory(fd).await
    }

    async fn sync(&mut self, fd: Resource<types::Descriptor>) -> FsResult<()> {
        self.fs.sync(fd).await
    }

    async fn create_directory_at(
        &mut self,
        fd: Resource<types::Descriptor>,
        path: String,
    ) -> FsResult<()> {
        let quota = self.quota;
        quota.creating(self.fs.create_directory_at(fd, path)).await
    }

    async fn stat(&mut self, fd: Resource<types::Descriptor>) -> FsResult<types::DescriptorStat> {
        self.fs.stat(fd).await
    }

    async fn stat_at(
        &mut self,
        fd: Resource<types::Descriptor>,
        path_flags: types::PathFlags,
        path: String,
    ) -> FsResult<types::DescriptorStat> {
        self.fs.stat_at(fd, path_flags, path).await
    }

    async fn set_times_at(
        &mut self,
        fd: Resource<types::Descriptor>,
        path_flags: types::PathFlags,
        path: String,
        atim: types::NewTimestamp,
        mtim: types::NewTimestamp,
    ) -> FsResult<()> {
        self.fs.set_times_at(fd, path_flags, path, atim, mtim).await
    }

    async fn link_at(
        &mut self,
        fd: Resource<types::Descriptor>,
        old_path_flags: types::PathFlags,
        old_path: String,
        new_descriptor: Resource<types::Descriptor>,
        new_path: String,
    ) -> FsResult<()> {
        let quota = self.quota;
        let link = self
            .fs
            .link_at(fd, old_path_flags, old_path, new_descriptor, new_path);
        quota.creating(link).await
    }

    async fn open_at(
        &mut self,
        fd: Resource<types::Descriptor>,
        path_flags: types::PathFlags,
        path: String,
        oflags: types::OpenFlags,
        flags: types::DescriptorFlags,
    ) -> FsResult<Resource<types::Descriptor>> {
        let creates = oflags.contains(types::OpenFlags::CREATE);
        let truncates = oflags.contains(types::OpenFlags::TRUNCATE);
        // What is there now: a new entry is charged; a truncated file's bytes come back.
        let existing = if creates || truncates {
            self.fs
                .stat_at(again(&fd), path_flags, path.clone())
                .await
                .ok()
        } else {
            None
        };
        let new_entry = creates && existing.is_none();
        if new_entry {
            self.quota.charge_entry().map_err(refused)?;
        }
        match self.fs.open_at(fd, path_flags, path, oflags, flags).await {
            Ok(opened) => {
                if let Some(stat) = existing.filter(|_| truncates)
                    && stat.type_ == types::DescriptorType::RegularFile
                {
                    self.quota.credit_bytes(stat.size);
                }
                Ok(opened)
            }
            Err(e) => {
                if new_entry {
                    self.quota.credit_entry();
                }
                Err(e)
            }
        }
    }

    fn drop(&mut self, fd: Resource<types::Descriptor>) -> wasmtime::Result<()> {
        HostDescriptor::drop(&mut self.fs, fd)
    }

    async fn readlink_at(
        &mut self,
        fd: Resource<types::Descriptor>,
        path: String,
    ) -> FsResult<String> {
        self.fs.readlink_at(fd, path).await
    }

    async fn remove_directory_at(
        &mut self,
        fd: Resource<types::Descriptor>,
        path: String,
    ) -> FsResult<()> {
        self.fs.remove_directory_at(fd, path).await?;
        self.quota.credit_entry();
        Ok(())
    }

    async fn rename_at(
        &mut self,
        fd: Resource<types::Descriptor>,
        old_path: String,
        new_fd: Resource<types::Descriptor>,
        new_path: String,
    ) -> FsResult<()> {
        self.fs.rename_at(fd, old_path, new_fd, new_path).await
    }

    async fn symlink_at(
        &mut self,
        fd: Resource<types::Descriptor>,
        src_path: String,
        dest_path: String,
    ) -> FsResult<()> {
        let quota = self.quota;
        quota
            .creating(self.fs.symlink_at(fd, src_path, dest_path))
            .await
    }

    async fn unlink_file_at(
        &mut self,
        fd: Resource<types::Descriptor>,
        path: String,
    ) -> FsResult<()> {
        self.fs.unlink_file_at(fd, path).await?;
        self.quota.credit_entry();
        Ok(())
    }

    fn read_via_stream(
        &mut self,
        fd: Resource<types::Descriptor>,
        offset: types::Filesize,
    ) -> FsResult<Resource<wasmtime_wasi::p2::DynInputStream>> {
        self.fs.read_via_stream(fd, offset)
    }

    fn write_via_stream(
        &mut self,
        fd: Resource<types::Descriptor>,
        offset: types::Filesize,
    ) -> FsResult<Resource<DynOutputStream>> {
        let stream = self.fs.write_via_stream(fd, offset)?;
        self.counted(stream)
    }

    fn append_via_stream(
        &mut self,
        fd: Resource<types::Descriptor>,
    ) -> FsResult<Resource<DynOutputStream>> {
        let stream = self.fs.append_via_stream(fd)?;
        self.counted(stream)
    }

    async fn is_same_object(
        &mut self,
        a: Resource<types::Descriptor>,
        b: Resource<types::Descriptor>,
    ) -> wasmtime::Result<bool> {
        self.fs.is_same_object(a, b).await
    }

    async fn metadata_hash(
        &mut self,
        fd: Resource<types::Descriptor>,
    ) -> FsResult<types::MetadataHashValue> {
        self.fs.metadata_hash(fd).await
    }

    async fn metadata_hash_at(
        &mut self,
        fd: Resource<types::Descriptor>,
        path_flags: types::PathFlags,
        path: String,
    ) -> FsResult<types::MetadataHashValue> {
        self.fs.metadata_hash_at(fd, path_flags, path).await
    }
}

impl HostDirectoryEntryStream for ScratchFs<'_> {
    async fn read_directory_entry(
        &mut self,
        stream: Resource<types::DirectoryEntryStream>,
    ) -> FsResult<Option<types::DirectoryEntry>> {
        self.fs.read_directory_entry(stream).await
    }

    fn drop(&mut self, stream: Resource<types::DirectoryEntryStream>) -> wasmtime::Result<()> {
        HostDirectoryEntryStream::drop(&mut self.fs, stream)
    }
}

/// Scratch directories for invocations: empty ones no guest has touched, kept for the
/// next invocation, and new ones made when none is left. Dropping the pool removes the
/// directories it keeps.
#[derive(Debug)]
pub struct ScratchPool {
    root: PathBuf,
    ready: Mutex<Vec<tempfile::TempDir>>,
    keep: usize,
}

impl ScratchPool {
    /// A pool creating its directories under `root`, keeping at most `keep` of them
    /// (one per invocation that can be live at once is enough).
    pub fn new(root: &Path, keep: usize) -> Self {
        ScratchPool {
            root: root.to_path_buf(),
            ready: Mutex::new(Vec::new()),
            keep,
        }
    }

    /// An empty, private directory for one invocation: one from the pool if there is
    /// one, else a new one.
    pub fn take(&self) -> std::io::Result<tempfile::TempDir> {
        loop {
            let kept = self
                .ready
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pop();
            match kept {
                Some(dir) if dir.path().is_dir() => return Ok(dir),
                // Removed while it waited (a cleaner of old temporary files, say): its
                // preopen would fail the invocation. Dropping it finds nothing to remove.
                Some(_) => continue,
                None => {
                    return tempfile::Builder::new()
                        .prefix("work-")
                        .tempdir_in(&self.root);
                }
            }
        }
    }

    /// Takes back an invocation's directory once its guest is gone. An untouched one
    /// goes back to the pool; a touched one is handed back for removal (`None`), which
    /// can wait on the disk, so the caller does it off the call path.
    pub fn give_back(&self, dir: tempfile::TempDir, touched: bool) -> Option<tempfile::TempDir> {
        if touched {
            return Some(dir);
        }
        let mut ready = self.ready.lock().unwrap_or_else(PoisonError::into_inner);
        if ready.len() >= self.keep {
            return Some(dir);
        }
        ready.push(dir);
        None
    }
}

/// A file's output stream that charges every byte written through it.
struct CountingStream {
    inner: DynOutputStream,
    quota: Arc<ScratchQuota>,
}

impl CountingStream {
    fn charge(&self, n: usize) -> StreamResult<()> {
        self.quota
            .charge_bytes(len64(n))
            .map_err(|e| StreamError::LastOperationFailed(wasmtime::Error::new(e)))
    }
}

#[wasmtime_wasi::async_trait]
impl OutputStream for CountingStream {
    fn write(&mut self, bytes: bytes::Bytes) -> StreamResult<()> {
        let n = bytes.len();
        self.charge(n)?;
        let result = self.inner.write(bytes);
        if result.is_err() {
            self.quota.credit_bytes(len64(n));
        }
        result
    }

    fn flush(&mut self) -> StreamResult<()> {
        self.inner.flush()
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        self.inner.check_write()
    }

    async fn blocking_write_and_flush(&mut self, bytes: bytes::Bytes) -> StreamResult<()> {
        self.charge(bytes.len())?;
        self.inner.blocking_write_and_flush(bytes).await
    }

    fn write_zeroes(&mut self, nelem: usize) -> StreamResult<()> {
        self.charge(nelem)?;
        let result = self.inner.write_zeroes(nelem);
        if result.is_err() {
            self.quota.credit_bytes(len64(nelem));
        }
        result
    }

    async fn write_ready(&mut self) -> StreamResult<usize> {
        self.inner.write_ready().await
    }

    async fn cancel(&mut self) {
        self.inner.cancel().await
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for CountingStream {
    async fn ready(&mut self) {
        self.inner.ready().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_untouched_scratch_dirs_are_handed_out_again() {
        let root = tempfile::tempdir().unwrap();
        let pool = ScratchPool::new(root.path(), 1);
        let first = pool.take().unwrap();
        let path = first.path().to_path_buf();
        assert!(
            pool.give_back(first, false).is_none(),
            "kept for the next call"
        );
        let again = pool.take().unwrap();
        assert_eq!(again.path(), path);
        let other = pool.take().unwrap();
        assert_ne!(
            other.path(),
            path,
            "a kept dir serves one invocation at a time"
        );
        // A touched dir is handed back for removal and never served again.
        let removed = pool.give_back(again, true).unwrap();
        assert_eq!(removed.path(), path);
        drop(removed);
        assert!(!path.exists());
        assert!(pool.give_back(other, false).is_none());
        let third = pool.take().unwrap();
        assert_ne!(third.path(), path);
        // Past `keep`, untouched dirs are removed too.
        assert!(pool.give_back(pool.take().unwrap(), false).is_none());
        assert!(pool.give_back(third, false).is_some());
    }

    #[test]
    fn a_kept_scratch_dir_removed_under_the_pool_is_not_handed_out() {
        let root = tempfile::tempdir().unwrap();
        let pool = ScratchPool::new(root.path(), 2);
        let dir = pool.take().unwrap();
        let path = dir.path().to_path_buf();
        assert!(pool.give_back(dir, false).is_none());
        std::fs::remove_dir(&path).unwrap();
        let fresh = pool.take().unwrap();
        assert!(fresh.path().is_dir());
        assert_ne!(fresh.path(), path);
    }

    #[test]
    fn charges_stop_at_the_quota_and_credits_never_go_below_zero() {
        let q = ScratchQuota::new(10, 2);
        assert!(q.charge_bytes(6).is_ok());
        assert_eq!(q.charge_bytes(5), Err(QuotaExceeded::Bytes(10)));
        assert_eq!(q.bytes_used(), 6);
        assert_eq!(q.refusal(), Some(QuotaExceeded::Bytes(10)));
        q.credit_bytes(100);
        assert_eq!(q.bytes_used(), 0);
        assert!(q.charge_entry().is_ok());
        assert!(q.charge_entry().is_ok());
        assert_eq!(q.charge_entry(), Err(QuotaExceeded::Entries(2)));
        assert_eq!(q.refusal(), Some(QuotaExceeded::Entries(2)));
        q.credit_entry();
        assert!(q.charge_entry().is_ok());
        assert_eq!(QuotaExceeded::Bytes(1).code(), ErrorCode::InsufficientSpace);
        assert_eq!(QuotaExceeded::Entries(1).code(), ErrorCode::Quota);
    }
}
