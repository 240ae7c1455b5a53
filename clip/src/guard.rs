//! The bounds every untrusted image is held to, whoever reads it (the embedder, `serve`'s thumbnails
//! and image uploads, the CLI): decided from the file's size and header *before* decoding, so a
//! small hostile file cannot make us allocate or compute without bound. What a decode may still do
//! wrong (panic, run long) is contained by running it on a guarded thread.
//!
//! - Only regular files are opened: a FIFO would block the reader forever, a device never ends.
//!   The file is opened non-blocking and checked on the open handle (no stat-then-open race).
//! - File size, pixels, each side, aspect ratio and the decoded buffer's bytes have limits
//!   ([`Limits`]). The aspect limit is what keeps the resize bounded: the shortest side goes to 224,
//!   so a 1,000,000 x 1 strip would need a 224,000,000 x 224 intermediate.
//! - [`run_guarded`] runs one decode on its own thread: a panic becomes `decoder_panic`, a decode
//!   past the deadline becomes `decode_timeout` (the thread is abandoned and ends on its own; at most
//!   [`MAX_LIVE_DECODES`] guarded threads live at once, abandoned ones included, so memory stays
//!   bounded by that many budgets).
//!
//! It never retries and never logs file contents.

use std::{
    io::Read,
    os::unix::fs::{FileTypeExt, OpenOptionsExt},
    path::{Path, PathBuf},
    sync::{
        Arc, Condvar, Mutex,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    time::Duration,
};

use crate::error::ImageError;

/// The bounds on one image. `Default` gives the values documented on each field.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Bytes of the file (default 256 MiB).
    pub max_file_bytes: u64,
    /// Pixels of the image (default 100,000,000: a 100 MP medium-format camera's frame).
    pub max_pixels: u64,
    /// Pixels on either side (default 65,535, JPEG's own limit).
    pub max_side: u32,
    /// Long side / short side (default 100; a 360° panorama is about 6-20).
    pub max_aspect: u32,
    /// Bytes the decoder may allocate for the image (default 512 MiB; a 100 MP RGB image is 300 MB).
    pub max_decode_bytes: u64,
    /// Scans of a progressive JPEG (default 256; encoders write about 10).
    pub max_jpeg_scans: usize,
    /// Wall time of one decode (default 30 s; a 100 MP image decodes in 1-3 s on one core).
    pub decode_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_file_bytes: 256 << 20,
            max_pixels: 100_000_000,
            max_side: 65_535,
            max_aspect: 100,
            max_decode_bytes: 512 << 20,
            max_jpeg_scans: 256,
            decode_timeout: Duration::from_secs(30),
        }
    }
}

impl Limits {
    /// Checks a header's dimensions: empty, then too many pixels, then too thin, then a side too
    /// long (so a 1,000,000 x 1 strip is `extreme_aspect`, what is wrong with it).
    pub fn check_dimensions(&self, width: u32, height: u32) -> Result<(), ImageError> {
        if width == 0 || height == 0 {
            return Err(ImageError::Empty);
        }
        if u64::from(width) * u64::from(height) > self.max_pixels {
            return Err(ImageError::TooManyPixels { width, height, limit: self.max_pixels });
        }
        let (long, short) = (width.max(height), width.min(height));
        if u64::from(long) > u64::from(short) * u64::from(self.max_aspect) {
            return Err(ImageError::ExtremeAspect { width, height, limit: self.max_aspect });
        }
        if long > self.max_side {
            return Err(ImageError::SideTooLong { width, height, limit: self.max_side });
        }
        Ok(())
    }

    pub fn check_decode_bytes(&self, needed: u64) -> Result<(), ImageError> {
        if needed > self.max_decode_bytes {
            return Err(ImageError::OverMemoryBudget { needed, limit: self.max_decode_bytes });
        }
        Ok(())
    }
}

/// What a path is when it is not a regular file, for skip reasons and errors.
pub fn file_kind(ft: std::fs::FileType) -> &'static str {
    if ft.is_file() {
        "regular file"
    } else if ft.is_dir() {
        "directory"
    } else if ft.is_fifo() {
        "fifo"
    } else if ft.is_socket() {
        "socket"
    } else if ft.is_char_device() {
        "character device"
    } else if ft.is_block_device() {
        "block device"
    } else {
        "special file"
    }
}

/// Opens `path` for reading only if it is a regular file (symlinks followed). Opening is
/// non-blocking, so a FIFO cannot hang the caller, and the type is checked on the opened handle.
pub fn open_regular(path: &Path) -> Result<std::fs::File, ImageError> {
    let file = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY).open(path).map_err(|source| match std::fs::metadata(path) {
        // a socket cannot even be opened: say what it is, not "no such device"
        Ok(meta) if !meta.is_file() => ImageError::NotARegularFile { path: path.to_owned(), kind: file_kind(meta.file_type()) },
        _ => ImageError::Io { path: path.to_owned(), source },
    })?;
    let ft = file.metadata().map_err(|source| ImageError::Io { path: path.to_owned(), source })?.file_type();
    if !ft.is_file() {
        return Err(ImageError::NotARegularFile { path: path.to_owned(), kind: file_kind(ft) });
    }
    Ok(file)
}

/// Reads a regular file of at most `limits.max_file_bytes` (a file that grows while read is cut
/// at the limit and refused).
pub fn read_file(path: &Path, limits: &Limits) -> Result<Vec<u8>, ImageError> {
    let file = open_regular(path)?;
    let size = file.metadata().map_err(|source| ImageError::Io { path: path.to_owned(), source })?.len();
    if size > limits.max_file_bytes {
        return Err(ImageError::FileTooLarge { size, limit: limits.max_file_bytes });
    }
    let mut bytes = Vec::with_capacity(size as usize);
    file.take(limits.max_file_bytes + 1).read_to_end(&mut bytes).map_err(|source| ImageError::Io { path: path.to_owned(), source })?;
    if bytes.len() as u64 > limits.max_file_bytes {
        return Err(ImageError::FileTooLarge { size: bytes.len() as u64, limit: limits.max_file_bytes });
    }
    Ok(bytes)
}

/// Guarded decode threads alive at once, abandoned (timed-out) ones included.
pub const MAX_LIVE_DECODES: usize = 32;

/// A counting semaphore over the guarded threads.
struct Slots {
    live: Mutex<usize>,
    freed: Condvar,
    max: usize,
}

static SLOTS: Slots = Slots { live: Mutex::new(0), freed: Condvar::new(), max: MAX_LIVE_DECODES };

/// A slot among the live guarded threads; freed when the thread ends, however it ends.
struct Slot(&'static Slots);

impl Slots {
    /// A slot, waiting at most `timeout` for one: threads stuck on a stalled mount must not make
    /// every later caller wait forever.
    fn take(&'static self, timeout: Duration) -> Option<Slot> {
        let live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        let (mut live, waited) = self.freed.wait_timeout_while(live, timeout, |n| *n >= self.max).unwrap_or_else(|p| p.into_inner());
        if waited.timed_out() && *live >= self.max {
            return None;
        }
        *live += 1;
        Some(Slot(self))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        *self.0.live.lock().unwrap_or_else(|p| p.into_inner()) -= 1;
        self.0.freed.notify_one();
    }
}

/// Runs `decode` on a thread of its own and waits at most `timeout` for it. A panic inside is
/// `ImageError::DecoderPanic` with its message; no answer in time is `DecodeTimeout`, and the thread
/// is left to finish on its own (its slot is held until it does). No slot free within `timeout`
/// is `Busy` (transient).
pub fn run_guarded<T: Send + 'static>(timeout: Duration, decode: impl FnOnce() -> Result<T, ImageError> + Send + 'static) -> Result<T, ImageError> {
    run_guarded_in(&SLOTS, timeout, decode)
}

fn run_guarded_in<T: Send + 'static>(slots: &'static Slots, timeout: Duration, decode: impl FnOnce() -> Result<T, ImageError> + Send + 'static) -> Result<T, ImageError> {
    let slot = slots.take(timeout).ok_or_else(|| ImageError::Busy(format!("all {} decode threads are busy; try again", slots.max)))?;
    let (tx, rx) = mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name("decode-guarded".into())
        .stack_size(8 << 20)
        .spawn(move || {
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(decode));
            drop(slot);
            // the caller may have given up waiting: nobody to tell
            let _ = tx.send(outcome);
        })
        .map_err(|e| ImageError::Busy(e.to_string()))?;
    match rx.recv_timeout(timeout) {
        Ok(Ok(result)) => result,
        Ok(Err(panic)) => {
            let message = panic.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| panic.downcast_ref::<String>().cloned()).unwrap_or_else(|| "unknown panic".into());
            Err(ImageError::DecoderPanic(message))
        }
        Err(mpsc::RecvTimeoutError::Timeout) => Err(ImageError::DecodeTimeout(timeout)),
        Err(mpsc::RecvTimeoutError::Disconnected) => Err(ImageError::DecoderPanic("the decode thread ended without an answer".into())),
    }
}

/// Reads a file (within the limits) and decodes its bytes, both guarded. A deadline that passes
/// while the file is still being read (a stalled network mount) is an I/O error, transient: the
/// file is tried again later; one that passes while decoding is `DecodeTimeout`.
pub fn read_and_decode<T: Send + 'static>(path: &Path, limits: Limits, decode: impl FnOnce(Vec<u8>) -> Result<T, ImageError> + Send + 'static) -> Result<T, ImageError> {
    let read = Arc::new(AtomicBool::new(false));
    let (flag, owned): (Arc<AtomicBool>, PathBuf) = (read.clone(), path.to_owned());
    match run_guarded(limits.decode_timeout, move || {
        let bytes = read_file(&owned, &limits)?;
        flag.store(true, Ordering::SeqCst);
        decode(bytes)
    }) {
        Err(ImageError::DecodeTimeout(t)) if !read.load(Ordering::SeqCst) => {
            Err(ImageError::Io { path: path.to_owned(), source: std::io::Error::new(std::io::ErrorKind::TimedOut, format!("reading took longer than {t:?}")) })
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dimensions_are_checked_empty_then_pixels_then_aspect_then_side() {
        let limits = Limits::default();
        let check = |w, h, expected: &str| {
            let got = limits.check_dimensions(w, h).err().map(|e| e.reason()).unwrap_or("ok");
            assert_eq!(got, expected, "{w}x{h}");
        };
        check(4000, 3000, "ok");
        check(1, 1, "ok");
        check(2000, 20, "ok"); // exactly 100:1
        check(2001, 20, "extreme_aspect");
        check(1_000_000, 1, "extreme_aspect");
        check(1, 1_000_000, "extreme_aspect");
        check(20_000, 20_000, "too_large");
        check(70_000, 1_000, "too_large");
        check(0, 10, "empty");
        check(10, 0, "empty");
    }

    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pipe.jpg");
        let path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid C string; mkfifo only creates a file
        assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0);
        let err = read_file(&fifo, &Limits::default()).unwrap_err();
        assert_eq!((err.reason(), err.to_string()), ("not_a_regular_file", format!("{} is not a regular file (fifo); only regular files are read", fifo.display())));
        let err = read_file(dir.path(), &Limits::default()).unwrap_err();
        assert_eq!(err.reason(), "not_a_regular_file", "{err}");
    }

    #[test]
    fn a_file_over_the_size_limit_is_refused_before_reading() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("big.png");
        std::fs::write(&f, vec![0u8; 2000]).unwrap();
        let limits = Limits { max_file_bytes: 1000, ..Limits::default() };
        assert_eq!(read_file(&f, &limits).unwrap_err().to_string(), "file of 2000 bytes is larger than the limit of 1000 bytes");
    }

    #[test]
    fn a_panicking_decode_is_an_error_and_the_caller_goes_on() {
        let err = run_guarded::<()>(Duration::from_secs(60), || panic!("index out of bounds in a decoder")).unwrap_err();
        assert_eq!((err.reason(), err.to_string()), ("decoder_panic", "the image decoder crashed on this file: index out of bounds in a decoder".to_owned()));
        assert_eq!(run_guarded(Duration::from_secs(60), || Ok(7)).unwrap(), 7);
    }

    #[test]
    fn a_decode_past_its_deadline_is_abandoned() {
        // the "decode" waits for a message that only comes after the caller gave up
        let (release, wait) = mpsc::channel::<()>();
        let err = run_guarded::<()>(Duration::from_millis(20), move || {
            let _ = wait.recv();
            Ok(())
        })
        .unwrap_err();
        assert_eq!(err.reason(), "decode_timeout");
        drop(release);
    }

    #[test]
    fn no_free_slot_within_the_deadline_is_busy_not_a_hang() {
        let slots: &'static Slots = Box::leak(Box::new(Slots { live: Mutex::new(0), freed: Condvar::new(), max: 1 }));
        // the one slot is held by a decode stuck until the test releases it
        let (release, stuck) = mpsc::channel::<()>();
        let err = run_guarded_in::<()>(slots, Duration::from_millis(10), move || {
            let _ = stuck.recv();
            Ok(())
        })
        .unwrap_err();
        assert_eq!(err.reason(), "decode_timeout");
        let err = run_guarded_in::<()>(slots, Duration::from_millis(10), || Ok(())).unwrap_err();
        assert_eq!((err.reason(), err.is_transient()), ("busy", true), "{err}");
        // once the stuck decode ends, its slot is free again
        drop(release);
        assert_eq!(run_guarded_in(slots, Duration::from_secs(60), || Ok(1)).unwrap(), 1);
    }
}
