//! How a file path is written wherever it is stored or sent (catalog rows, messages, payloads, API
//! answers): as text, losslessly. A Unix path is bytes, not always UTF-8 (a camera card written on
//! another system, a Latin-1 name); `to_string_lossy` would store a different path that can never be
//! opened again. So: every byte of valid UTF-8 stands for itself, a backslash is written `\\`, and a
//! byte that is not valid UTF-8 is written `\xNN`. Paths without a backslash or a bad byte (nearly
//! all) read the same as before; `from_stored(to_stored(p)) == p` for every path.
//!
//! Pure code, no I/O.

use std::{
    ffi::OsString,
    os::unix::ffi::{OsStrExt, OsStringExt},
    path::{Path, PathBuf},
};

/// The stored (and displayed) form of a path.
pub fn to_stored(path: &Path) -> String {
    let mut out = String::with_capacity(path.as_os_str().len());
    for chunk in path.as_os_str().as_bytes().utf8_chunks() {
        for c in chunk.valid().chars() {
            if c == '\\' {
                out.push_str("\\\\");
            } else {
                out.push(c);
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// The path a stored form stands for. A text that `to_stored` cannot have written (a lone
/// backslash, a bad escape) is taken literally, byte for byte, so nothing is ever lost.
pub fn from_stored(stored: &str) -> PathBuf {
    match decode(stored) {
        Some(bytes) => PathBuf::from(OsString::from_vec(bytes)),
        None => PathBuf::from(stored),
    }
}

fn decode(s: &str) -> Option<Vec<u8>> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            out.push(bytes[i]);
            i += 1;
            continue;
        }
        match bytes.get(i + 1)? {
            b'\\' => {
                out.push(b'\\');
                i += 2;
            }
            b'x' => {
                let hex = std::str::from_utf8(bytes.get(i + 2..i + 4)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 4;
            }
            _ => return None,
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(bytes: &[u8], stored: &str) {
        let path = Path::new(std::ffi::OsStr::from_bytes(bytes));
        assert_eq!(to_stored(path), stored, "{bytes:?}");
        assert_eq!(from_stored(stored), path, "{stored}");
    }

    #[test]
    fn paths_round_trip_and_read_as_before_when_plain() {
        check(b"/photos/2024/IMG_0001.JPG", "/photos/2024/IMG_0001.JPG");
        check("/photos/café ñ 日本.png".as_bytes(), "/photos/café ñ 日本.png");
        check(b"/photos/latin1-\xe9t\xe9.png", "/photos/latin1-\\xe9t\\xe9.png");
        check(b"/a\\b/c\\xff", "/a\\\\b/c\\\\xff");
        check(b"/mixed/\\\xff", "/mixed/\\\\\\xff");
        check(b"/new\nline", "/new\nline");
    }

    #[test]
    fn text_no_encoder_writes_is_taken_literally() {
        assert_eq!(from_stored("/odd\\q"), Path::new("/odd\\q"));
        assert_eq!(from_stored("/short\\x4"), Path::new("/short\\x4"));
    }
}
