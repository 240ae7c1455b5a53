//! Ingest, the *scan* stage: walks image folders and records assets (path, size, mtime, content hash,
//! dimensions) in the catalog so the coordinator can turn them into jobs. It reads files and the
//! catalog; it never embeds, and never talks to a vector store or a queue.
//!
//! Files are recognised by their content (magic bytes), not their extension. Symlinks are followed,
//! but a link back into a directory already being walked is reported and skipped, never looped.
//! Only regular files are opened: a FIFO, a socket or a device (a link to `/dev/zero`) is skipped
//! as `not_a_regular_file` without being opened, so nothing can block or feed the scan forever.
//! Paths are recorded in `protocol::paths`' lossless form, so a name that is not UTF-8 opens again.
//! A re-scan of an unchanged file (same size, mtime and hash) is `Unchanged`, so the coordinator
//! skips it, and so is an unchanged file whose last job failed permanently, unless the caller asks
//! to retry failures; files the catalog has under a root that are gone from disk are listed as
//! `missing`.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    io::{Read, Seek},
    path::{Path, PathBuf},
};

use catalog::{Asset, AssetChange, Catalog, CatalogError, NewAsset};
use chrono::{DateTime, SubsecRound, Utc};
use protocol::paths::{from_stored, to_stored};
use rayon::prelude::*;
use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("{0} does not exist or cannot be read: {1}")]
    Root(PathBuf, std::io::Error),
    #[error("{0} is not a directory")]
    NotADirectory(PathBuf),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
}

/// A file the walk found that holds an image.
#[derive(Debug, Clone, PartialEq)]
pub struct ScannedFile {
    /// Absolute, canonical path.
    pub path: String,
    pub size: u64,
    /// Truncated to microseconds, the precision both catalogs store.
    pub modified: DateTime<Utc>,
    /// sha256 of the content, hex.
    pub hash: String,
    pub mime: &'static str,
    pub width: Option<u32>,
    pub height: Option<u32>,
}

/// Something the walk passed over, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Skipped {
    pub path: String,
    pub reason: &'static str,
}

#[derive(Debug, Default)]
pub struct Walk {
    pub files: Vec<ScannedFile>,
    pub skipped: Vec<Skipped>,
    /// Files read and hashed; the others matched the catalog's size and mtime and were not opened.
    pub hashed: usize,
}

/// Files a scan walks, reads and records at a time: what it holds of the corpus at any moment.
const CHUNK: usize = 2_000;

/// What the catalog knows of the files under the roots, by stored path: a file whose size and
/// mtime are the catalog's is not read again (as rsync and git decide; an edit that keeps both is
/// seen once either changes, or by deleting the asset's vector).
pub type Known = HashMap<String, Asset>;

/// The media types `sniff` gives, for a type read back from the catalog.
fn known_mime(mime: &str) -> Option<&'static str> {
    ["image/jpeg", "image/png", "image/webp", "image/gif", "image/bmp", "image/tiff"].into_iter().find(|m| *m == mime)
}

/// The catalog's record of `path` as a scanned file, if its size and mtime still match.
fn unchanged(path: &Path, known: &Known) -> Option<ScannedFile> {
    let stored = to_stored(path);
    let asset = known.get(&stored).filter(|a| a.deleted_at.is_none())?;
    let meta = std::fs::metadata(path).ok().filter(|m| m.is_file())?;
    let modified = DateTime::<Utc>::from(meta.modified().ok()?).trunc_subsecs(6);
    if asset.file_size != Some(meta.len() as i64) || asset.file_modified_at != Some(modified) {
        return None;
    }
    Some(ScannedFile {
        path: stored,
        size: meta.len(),
        modified,
        hash: asset.content_hash.clone()?,
        mime: known_mime(asset.mime_type.as_deref()?)?,
        width: asset.width.map(|w| w as u32),
        height: asset.height.map(|h| h as u32),
    })
}

/// The image formats the pipeline decodes, by magic bytes.
fn sniff(head: &[u8]) -> Option<&'static str> {
    use image::ImageFormat::*;
    match image::guess_format(head).ok()? {
        Jpeg => Some("image/jpeg"),
        Png => Some("image/png"),
        WebP => Some("image/webp"),
        Gif => Some("image/gif"),
        Bmp => Some("image/bmp"),
        Tiff => Some("image/tiff"),
        _ => None,
    }
}

/// The skip reason for a file that cannot be opened as a regular file.
fn open_failure(e: &clip::ImageError) -> &'static str {
    match e {
        clip::ImageError::NotARegularFile { .. } => "not_a_regular_file",
        _ => "unreadable",
    }
}

/// A regular file, opened, and its first bytes (a FIFO or device is never opened blocking).
fn open_with_head(path: &Path) -> Result<(std::fs::File, [u8; 32], usize), &'static str> {
    let mut file = clip::guard::open_regular(path).map_err(|e| open_failure(&e))?;
    let mut head = [0u8; 32];
    let n = file.read(&mut head).map_err(|_| "unreadable")?;
    Ok((file, head, n))
}

/// An image file directly in a directory, as `images_in` lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageFile {
    pub path: PathBuf,
    pub size: u64,
    pub modified: Option<chrono::DateTime<chrono::Utc>>,
    pub mime: &'static str,
}

/// The image files directly in `dir` (not below it), by name: regular files whose content is an
/// image, whatever their extension.
pub fn images_in(dir: &Path) -> Result<Vec<ImageFile>, ScanError> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir).map_err(|e| ScanError::Root(dir.to_owned(), e))?.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    Ok(paths
        .into_iter()
        .filter_map(|path| {
            let (file, head, n) = open_with_head(&path).ok()?;
            let mime = sniff(&head[..n])?;
            let meta = file.metadata().ok()?;
            Some(ImageFile { size: meta.len(), modified: meta.modified().ok().map(chrono::DateTime::<chrono::Utc>::from), mime, path })
        })
        .collect())
}

/// The media type of an image file by its content, or `None` if it holds no image this system reads.
pub fn image_type(path: &Path) -> Option<&'static str> {
    let (_, head, n) = open_with_head(path).ok()?;
    sniff(&head[..n])
}

fn read_file(path: &Path) -> Result<Option<ScannedFile>, &'static str> {
    let (mut file, head, n) = open_with_head(path)?;
    let meta = file.metadata().map_err(|_| "unreadable")?;
    let Some(mime) = sniff(&head[..n]) else { return Ok(None) };
    let mut hasher = Sha256::new();
    hasher.update(&head[..n]);
    std::io::copy(&mut file, &mut hasher).map_err(|_| "unreadable")?;
    // dimensions from the header only, within the decode limits; a file too broken (or too big) for
    // that is still recorded, and fails with its reason when it is decoded
    let limits = clip::Limits::default();
    let dims = if meta.len() <= limits.max_file_bytes && file.rewind().is_ok() { header_dimensions(file, &limits) } else { None };
    let modified: DateTime<Utc> = meta.modified().map_err(|_| "unreadable")?.into();
    Ok(Some(ScannedFile {
        path: to_stored(path),
        size: meta.len(),
        modified: modified.trunc_subsecs(6),
        hash: hex::encode(hasher.finalize()),
        mime,
        width: dims.map(|d| d.0),
        height: dims.map(|d| d.1),
    }))
}

fn header_dimensions(file: std::fs::File, limits: &clip::Limits) -> Option<(u32, u32)> {
    let mut reader = image::ImageReader::new(std::io::BufReader::new(file)).with_guessed_format().ok()?;
    let mut bounds = image::Limits::default();
    bounds.max_alloc = Some(limits.max_decode_bytes);
    reader.limits(bounds);
    reader.into_dimensions().ok()
}

/// The roots, canonical; each must be a directory.
fn canonical_roots(roots: &[PathBuf]) -> Result<Vec<PathBuf>, ScanError> {
    let mut canonical = Vec::with_capacity(roots.len());
    for root in roots {
        let root = root.canonicalize().map_err(|e| ScanError::Root(root.clone(), e))?;
        if !root.is_dir() {
            return Err(ScanError::NotADirectory(root));
        }
        canonical.push(root);
    }
    Ok(canonical)
}

/// Walks the (canonical) roots, blocking, and hands the regular files it finds to `emit`, `chunk`
/// paths at a time, until `emit` returns false; returns what it passed over. Directories in
/// `exclude` are not entered. A file reached twice (two roots, or a symlink) is handed over once:
/// the walk remembers a 16-byte digest of each canonical path, not the path.
fn walk_paths(canonical: &[PathBuf], exclude: &[PathBuf], size: usize, mut emit: impl FnMut(Vec<PathBuf>) -> bool) -> Vec<Skipped> {
    let mut chunk = Vec::with_capacity(size);
    let mut skipped = Vec::new();
    let mut seen: HashSet<[u8; 16]> = HashSet::new();
    let inside = |p: &Path| canonical.iter().any(|r| p.starts_with(r));
    for root in canonical {
        let mut entries = walkdir::WalkDir::new(root).follow_links(true).sort_by_file_name().into_iter().filter_entry(|e| !exclude.iter().any(|x| x == e.path()));
        while let Some(entry) = entries.next() {
            if let Ok(e) = &entry
                && e.path_is_symlink()
                && !e.path().canonicalize().is_ok_and(|target| inside(&target))
            {
                let path = to_stored(e.path());
                tracing::warn!(%path, "skipped: a link to outside the roots");
                skipped.push(Skipped { path, reason: "outside_root" });
                if e.file_type().is_dir() {
                    entries.skip_current_dir();
                }
                continue;
            }
            match entry {
                Ok(e) if e.file_type().is_file() => {
                    // a file reached twice (two roots, or a symlink) is read once; a hard link is
                    // a path of its own, recorded as such
                    let path = e.path().canonicalize().unwrap_or_else(|_| e.path().to_owned());
                    if !seen.insert(path_digest(&path)) {
                        continue;
                    }
                    chunk.push(path);
                    if chunk.len() == size && !emit(std::mem::replace(&mut chunk, Vec::with_capacity(size))) {
                        return skipped;
                    }
                }
                Ok(e) if e.file_type().is_dir() => {}
                Ok(e) => {
                    // a FIFO, a socket, a device (or a link to one): never opened
                    let path = to_stored(e.path());
                    tracing::info!(%path, kind = clip::guard::file_kind(e.file_type()), "skipped: not a regular file");
                    skipped.push(Skipped { path, reason: "not_a_regular_file" });
                }
                Err(e) => {
                    let path = e.path().map(to_stored).unwrap_or_default();
                    let reason = if e.loop_ancestor().is_some() { "symlink_loop" } else { "unreadable" };
                    tracing::warn!(%path, reason, "skipped while scanning");
                    skipped.push(Skipped { path, reason });
                }
            }
        }
    }
    if !chunk.is_empty() {
        emit(chunk);
    }
    skipped
}

/// The first 16 bytes of the SHA-256 of a path: two paths share it with a chance of about n^2 / 2^129
/// (1e-26 for a million files).
fn path_digest(path: &Path) -> [u8; 16] {
    use std::os::unix::ffi::OsStrExt;
    let digest = Sha256::digest(path.as_os_str().as_bytes());
    digest[..16].try_into().expect("a SHA-256 digest has 32 bytes")
}

/// Reads a chunk of files in parallel (blocking), each only if its size or mtime differ from what
/// `known` has.
fn read_chunk(paths: Vec<PathBuf>, known: &Known) -> Walk {
    let hashed = std::sync::atomic::AtomicUsize::new(0);
    let read: Vec<(PathBuf, Result<Option<ScannedFile>, &'static str>)> = paths
        .into_par_iter()
        .map(|p| {
            let r = match unchanged(&p, known) {
                Some(f) => Ok(Some(f)),
                None => {
                    hashed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    read_file(&p)
                }
            };
            (p, r)
        })
        .collect();
    let mut walk = Walk { hashed: hashed.into_inner(), ..Default::default() };
    for (path, r) in read {
        match r {
            Ok(Some(f)) => walk.files.push(f),
            Ok(None) => walk.skipped.push(Skipped { path: to_stored(&path), reason: "not_an_image" }),
            Err(reason) => walk.skipped.push(Skipped { path: to_stored(&path), reason }),
        }
    }
    walk
}

/// Walks the roots (blocking: run it on a blocking thread) and reads every file, in parallel, into
/// one `Walk`. Directories in `exclude` (deselected subdirectories) are not entered. Links are
/// followed, but only to files and directories inside the roots: a link that leads outside them
/// (to `/etc/passwd`, to another user's photos) is skipped and reported `outside_root`, never
/// read. A scan (`Scan`) goes the same way a chunk at a time, without holding the whole walk.
pub fn walk(roots: &[PathBuf], exclude: &[PathBuf]) -> Result<Walk, ScanError> {
    let canonical = canonical_roots(roots)?;
    let mut walk = Walk::default();
    let skipped = walk_paths(&canonical, exclude, CHUNK, |chunk| {
        let read = read_chunk(chunk, &Known::new());
        walk.files.extend(read.files);
        walk.skipped.extend(read.skipped);
        walk.hashed += read.hashed;
        true
    });
    walk.skipped.splice(0..0, skipped);
    Ok(walk)
}

/// What recording a walk in the catalog did.
#[derive(Debug, Default)]
pub struct ScanReport {
    /// Images found that need embedding (new, changed, never indexed, or failed and retried);
    /// `Scan::next_chunk` handed over their ids.
    pub to_embed: usize,
    pub inserted: usize,
    pub changed: usize,
    pub unchanged: usize,
    pub skipped: Vec<Skipped>,
    /// Assets the catalog has under the roots whose file is gone.
    pub missing: Vec<i64>,
    /// Files read and hashed (new, or size or mtime changed).
    pub hashed: usize,
}

impl ScanReport {
    /// Images found that need no embedding: unchanged and indexed (or failed, not retried).
    pub fn skipped_unchanged(&self) -> usize {
        self.inserted + self.changed + self.unchanged - self.to_embed
    }
}

/// What a scan records, besides the files.
#[derive(Debug, Clone, Copy, Default)]
pub struct ScanOptions {
    /// The category new assets get.
    pub category_id: Option<i64>,
    /// Embed unchanged files whose last job failed permanently again (`index --retry-failed`).
    pub retry_failed: bool,
}

/// A scan under way: the walk runs on a blocking thread, `CHUNK` files ahead of the catalog; each
/// `next_chunk` reads a chunk (in parallel, hashing only files whose size or mtime changed),
/// records its new and changed files in the catalog and hands over the assets to embed. What it
/// holds of the corpus is one chunk, what the catalog had under the roots (`known_under`), and a
/// (device, inode) pair per file walked.
pub struct Scan<'a> {
    catalog: &'a Catalog,
    exclude: Vec<PathBuf>,
    options: ScanOptions,
    known: std::sync::Arc<Known>,
    chunks: tokio::sync::mpsc::Receiver<Vec<PathBuf>>,
    walker: tokio::task::JoinHandle<Vec<Skipped>>,
    /// Ids of the known assets found on disk (the others are missing).
    found: HashSet<i64>,
    /// Whether the walk is done (`next_chunk` gave `None`).
    done: bool,
    report: ScanReport,
}

impl<'a> Scan<'a> {
    /// Starts walking the roots. Files the catalog has with the same size and mtime are not read.
    pub async fn start(catalog: &'a Catalog, roots: &[PathBuf], exclude: &[PathBuf], options: ScanOptions) -> Result<Scan<'a>, ScanError> {
        let canonical = canonical_roots(roots)?;
        let known = std::sync::Arc::new(known_under(catalog, &canonical).await?);
        // two chunks in flight: the walk goes on while one is read and another recorded
        let (tx, chunks) = tokio::sync::mpsc::channel(2);
        let excluded = exclude.to_vec();
        let walker = tokio::task::spawn_blocking(move || walk_paths(&canonical, &excluded, CHUNK, |chunk| tx.blocking_send(chunk).is_ok()));
        Ok(Scan { catalog, exclude: exclude.to_vec(), options, known, chunks, walker, found: HashSet::new(), done: false, report: ScanReport::default() })
    }

    /// Reads and records the next chunk of files; returns the ids of its assets that need
    /// embedding (possibly none), or `None` once the walk is done.
    pub async fn next_chunk(&mut self) -> Result<Option<Vec<i64>>, ScanError> {
        let Some(paths) = self.chunks.recv().await else {
            self.done = true;
            return Ok(None);
        };
        let known = self.known.clone();
        let read = tokio::task::spawn_blocking(move || read_chunk(paths, &known)).await.expect("reading files does not panic");
        self.report.skipped.extend(read.skipped);
        self.report.hashed += read.hashed;
        let ids = record(self.catalog, read.files, &self.known, self.options, &mut self.report, &mut self.found).await?;
        self.report.to_embed += ids.len();
        Ok(Some(ids))
    }

    /// What the scan found: the files the walk passed over come first, and, once `next_chunk`
    /// returned `None`, the assets under the roots that are gone from disk are listed (before
    /// then, none is: the walk has not seen them all).
    pub async fn finish(mut self) -> ScanReport {
        // a walk stopped early ends when it next hands over a chunk
        drop(self.chunks);
        let walked = self.walker.await.expect("the walk does not panic");
        self.report.skipped.splice(0..0, walked);
        for asset in self.known.values().filter(|_| self.done) {
            let deselected = self.exclude.iter().any(|x| from_stored(&asset.path).starts_with(x));
            // newly gone: an asset already marked deleted is not reported again
            if !self.found.contains(&asset.id) && !deselected && asset.deleted_at.is_none() {
                self.report.missing.push(asset.id);
            }
        }
        self.report.missing.sort_unstable();
        self.report
    }
}

/// Records a chunk of files the walk read; returns the ids of the assets that need embedding. An
/// unchanged file is decided from `known` (what the catalog had under the roots before the walk)
/// without a query; new and changed files are written in one batch.
async fn record(catalog: &Catalog, files: Vec<ScannedFile>, known: &Known, options: ScanOptions, report: &mut ScanReport, found: &mut HashSet<i64>) -> Result<Vec<i64>, ScanError> {
    let mut ids = Vec::new();
    let mut pending: Vec<NewAsset> = Vec::new();
    for f in files {
        let new = NewAsset {
            path: f.path,
            created_at: Some(f.modified),
            width: f.width.map(|w| w as i32),
            height: f.height.map(|h| h as i32),
            file_size: Some(f.size as i64),
            mime_type: Some(f.mime.to_owned()),
            file_modified_at: Some(f.modified),
            content_hash: Some(f.hash),
            category_id: options.category_id,
        };
        match known.get(&new.path) {
            Some(asset) => {
                found.insert(asset.id);
                if asset.is_unchanged(&new) {
                    report.unchanged += 1;
                    if needs_embedding(asset, AssetChange::Unchanged, options) {
                        ids.push(asset.id);
                    }
                    continue;
                }
                report.changed += 1;
            }
            None => report.inserted += 1,
        }
        pending.push(new);
    }
    // new or changed: embedded
    ids.extend(catalog.record_assets(&pending).await?.into_iter().map(|a| a.id));
    Ok(ids)
}

/// Whether an asset needs embedding: new, changed or never indexed; an unchanged file that
/// failed permanently only when `retry_failed`.
fn needs_embedding(asset: &Asset, change: AssetChange, options: ScanOptions) -> bool {
    change != AssetChange::Unchanged
        || match asset.training_status {
            catalog::TrainingStatus::Trained => false,
            // failed permanently and nothing changed on disk: the same bytes would fail again
            catalog::TrainingStatus::Failed => options.retry_failed,
            _ => true,
        }
}

/// What the catalog has under the roots (one query per root), by path.
pub async fn known_under(catalog: &Catalog, roots: &[PathBuf]) -> Result<Known, ScanError> {
    let mut known = Known::new();
    for root in roots {
        let Ok(root) = root.canonicalize() else { continue };
        known.extend(catalog.assets_under(&to_stored(&root)).await?.into_iter().map(|a| (a.path.clone(), a)));
    }
    Ok(known)
}

/// Scans in one call, recording the files but no jobs: the chunks' assets to embed are only
/// counted (`ScanReport::to_embed`). Files the catalog has with the same size and mtime are not read.
pub async fn scan(catalog: &Catalog, roots: &[PathBuf], exclude: &[PathBuf], options: ScanOptions) -> Result<ScanReport, ScanError> {
    let mut scan = Scan::start(catalog, roots, exclude, options).await?;
    while scan.next_chunk().await?.is_some() {}
    Ok(scan.finish().await)
}

/// A directory directly under a root, with how many images its subtree holds.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DirectoryCount {
    pub path: String,
    pub name: String,
    pub image_count: i64,
}

/// What `subdirectories` found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct DirectoryScan {
    pub directories: Vec<DirectoryCount>,
    /// Images directly in the root.
    pub root_image_count: i64,
    /// Files passed over, by reason (`not_an_image`, `not_a_regular_file`, `unreadable`).
    pub skipped: BTreeMap<&'static str, usize>,
}

/// The directories directly under `root` and the images each holds (sniffed, not hashed), plus the
/// images directly in `root` (blocking). `recursive`: a directory counts the images below it too;
/// otherwise only those directly in it. Only regular files are opened.
pub fn subdirectories(root: &Path, recursive: bool) -> Result<DirectoryScan, ScanError> {
    let root = root.canonicalize().map_err(|e| ScanError::Root(root.to_owned(), e))?;
    if !root.is_dir() {
        return Err(ScanError::NotADirectory(root));
    }
    let skipped = std::cell::RefCell::new(BTreeMap::<&'static str, usize>::new());
    let skip = |reason: &'static str| *skipped.borrow_mut().entry(reason).or_default() += 1;
    let is_image = |p: &Path| {
        let reason = match open_with_head(p) {
            Ok((_, head, n)) if sniff(&head[..n]).is_some() => return true,
            Ok(_) => "not_an_image",
            Err(reason) => reason,
        };
        skip(reason);
        false
    };
    let mut dirs = Vec::new();
    let mut direct = 0;
    let mut children: Vec<PathBuf> = std::fs::read_dir(&root).map_err(|e| ScanError::Root(root.clone(), e))?.filter_map(|e| e.ok().map(|e| e.path())).collect();
    children.sort();
    for child in children {
        let Ok(meta) = std::fs::metadata(&child) else {
            skip("unreadable");
            continue;
        };
        if !meta.is_dir() && !meta.is_file() {
            skip("not_a_regular_file");
        } else if meta.is_dir() {
            // a file reached twice through links counts once
            let mut files: HashSet<PathBuf> = HashSet::new();
            for e in walkdir::WalkDir::new(&child).follow_links(true).max_depth(if recursive { usize::MAX } else { 1 }).into_iter().filter_map(Result::ok) {
                if e.file_type().is_file() {
                    files.extend(e.path().canonicalize().ok());
                } else if !e.file_type().is_dir() {
                    skip("not_a_regular_file");
                }
            }
            let count = files.iter().filter(|p| is_image(p)).count();
            let name = child.file_name().map(|n| to_stored(Path::new(n))).unwrap_or_default();
            dirs.push(DirectoryCount { path: to_stored(&child), name, image_count: count as i64 });
        } else if is_image(&child) {
            direct += 1;
        }
    }
    let skipped = skipped.into_inner();
    Ok(DirectoryScan { directories: dirs, root_image_count: direct, skipped })
}

#[cfg(test)]
mod tests {
    use std::os::unix::ffi::OsStrExt;

    use super::*;

    #[test]
    fn sniffing_goes_by_content_not_extension() {
        let check = |head: &[u8], expected: Option<&str>| assert_eq!(sniff(head), expected, "{head:?}");
        check(b"\x89PNG\r\n\x1a\n0000", Some("image/png"));
        check(b"\xff\xd8\xff\xe0\x00\x10JFIF", Some("image/jpeg"));
        check(b"RIFF\x00\x00\x00\x00WEBPVP8 ", Some("image/webp"));
        check(b"GIF89a", Some("image/gif"));
        check(b"%PDF-1.7 not an image", None);
        check(b"", None);
    }

    /// Links inside a root that lead outside the roots (a file, a directory) are skipped and
    /// reported, never read; a link to a file inside is read once; a link into another root is
    /// fine.
    #[test]
    fn links_out_of_the_roots_are_skipped_and_reported() {
        let (dir, outside, other) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let root = dir.path();
        let red = image::RgbImage::from_pixel(4, 3, image::Rgb([255, 0, 0]));
        red.save(root.join("red.png")).unwrap();
        red.save(outside.path().join("secret.png")).unwrap();
        std::fs::create_dir(outside.path().join("album")).unwrap();
        red.save(outside.path().join("album/private.png")).unwrap();
        red.save(other.path().join("shared.png")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret.png"), root.join("secret.png")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("album"), root.join("album")).unwrap();
        std::os::unix::fs::symlink(root.join("red.png"), root.join("again.png")).unwrap();
        std::os::unix::fs::symlink(other.path().join("shared.png"), root.join("shared.png")).unwrap();

        let w = walk(&[root.to_owned(), other.path().to_owned()], &[]).unwrap();
        let mut read: Vec<String> = w.files.iter().map(|f| Path::new(&f.path).file_name().unwrap().to_string_lossy().into_owned()).collect();
        read.sort();
        assert_eq!(read, ["red.png", "shared.png"], "each inside file once; nothing from outside");
        let mut outside_root: Vec<String> =
            w.skipped.iter().filter(|s| s.reason == "outside_root").map(|s| Path::new(&s.path).file_name().unwrap().to_string_lossy().into_owned()).collect();
        outside_root.sort();
        assert_eq!(outside_root, ["album", "secret.png"]);
        // alone, the second root's file is outside
        let w = walk(&[root.to_owned()], &[]).unwrap();
        assert!(w.skipped.iter().any(|s| s.reason == "outside_root" && s.path.ends_with("shared.png")));
    }

    #[test]
    fn the_walk_hands_over_files_a_chunk_at_a_time_each_once() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        for d in ["a", "b"] {
            std::fs::create_dir(root.join(d)).unwrap();
            for i in 0..4 {
                std::fs::write(root.join(d).join(format!("{i}.png")), b"x").unwrap();
            }
        }
        // reached again through a link in a later chunk, and through a second root
        std::os::unix::fs::symlink(root.join("a/0.png"), root.join("b/link.png")).unwrap();
        // a hard link is a path of its own
        std::fs::hard_link(root.join("a/1.png"), root.join("b/hard.png")).unwrap();
        let mut chunks = Vec::new();
        let skipped = walk_paths(&[root.clone(), root.join("a")], &[], 3, |chunk| {
            chunks.push(chunk.len());
            true
        });
        assert_eq!((chunks, skipped), (vec![3, 3, 3], vec![]), "8 files and a hard link, each once, in chunks of at most 3");
        let mut taken = 0;
        walk_paths(&[root], &[], 3, |_| {
            taken += 1;
            false
        });
        assert_eq!(taken, 1, "the walk stops when the taker does");
    }

    #[test]
    fn the_walk_skips_non_images_and_symlink_loops() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir(root.join("sub")).unwrap();
        image::RgbImage::from_pixel(4, 3, image::Rgb([255, 0, 0])).save(root.join("sub/red.png")).unwrap();
        std::fs::write(root.join("notes.jpg"), b"not really a jpeg").unwrap();
        std::os::unix::fs::symlink(root, root.join("sub/loop")).unwrap();
        let w = walk(&[root.to_owned()], &[]).unwrap();
        assert_eq!(w.files.len(), 1);
        assert_eq!((w.files[0].mime, w.files[0].width, w.files[0].height), ("image/png", Some(4), Some(3)));
        let mut reasons: Vec<&str> = w.skipped.iter().map(|s| s.reason).collect();
        reasons.sort();
        assert_eq!(reasons, ["not_an_image", "symlink_loop"]);

        let canonical = root.canonicalize().unwrap();
        let found = subdirectories(root, true).unwrap();
        assert_eq!(found.root_image_count, 0);
        assert_eq!(found.directories, [DirectoryCount { path: to_stored(&canonical.join("sub")), name: "sub".into(), image_count: 1 }]);
        // notes.jpg counts in the root and again in sub/, which reaches it through the link
        assert_eq!(found.skipped, BTreeMap::from([("not_an_image", 2)]));
        let w = walk(&[root.to_owned()], &[canonical.join("sub")]).unwrap();
        assert!(w.files.is_empty(), "a deselected directory is not entered");
    }

    #[test]
    fn special_files_are_skipped_without_being_opened() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        image::RgbImage::from_pixel(4, 3, image::Rgb([255, 0, 0])).save(root.join("red.png")).unwrap();
        let fifo = std::ffi::CString::new(root.join("pipe.jpg").to_str().unwrap()).unwrap();
        // SAFETY: a valid C string; mkfifo only creates a file
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        std::os::unix::fs::symlink("/dev/zero", root.join("zero.jpg")).unwrap();
        let _socket = std::os::unix::net::UnixListener::bind(root.join("sock.png")).unwrap();
        std::fs::create_dir(root.join("sub")).unwrap();
        std::os::unix::fs::symlink("/dev/urandom", root.join("sub/random.png")).unwrap();
        // a name that is not UTF-8 is kept byte for byte
        let latin1 = root.join(std::ffi::OsStr::from_bytes(b"caf\xe9.png"));
        std::fs::copy(root.join("red.png"), &latin1).unwrap();

        let w = walk(&[root.to_owned()], &[]).unwrap();
        let mut reasons: Vec<&str> = w.skipped.iter().map(|s| s.reason).collect();
        reasons.sort();
        // the links to devices lead outside the root: skipped for that first, never opened either way
        assert_eq!(reasons, ["not_a_regular_file", "not_a_regular_file", "outside_root", "outside_root"]);
        let paths: Vec<PathBuf> = w.files.iter().map(|f| from_stored(&f.path)).collect();
        assert_eq!(paths, [latin1.canonicalize().unwrap(), root.join("red.png").canonicalize().unwrap()]);
        assert!(w.files[0].path.ends_with("caf\\xe9.png"), "{}", w.files[0].path);

        let found = subdirectories(root, true).unwrap();
        assert_eq!(found.root_image_count, 2);
        assert_eq!(found.skipped, BTreeMap::from([("not_a_regular_file", 4)]));
    }
}
