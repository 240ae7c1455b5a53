//! A generated corpus of broken, hostile and unusual image files, for the hostile-input test:
//! [`write`] fills an empty directory with them and says, for each, what the pipeline must make of
//! it: embedded and searchable, a failed job with a reason label, or passed over by the scan.
//!
//! Everything is built in memory from the committed fixtures and from hand-crafted headers, so the
//! corpus is deterministic (a constant-seeded xorshift stands in for random bytes), small (a few MB)
//! and quick to write. Each case lives in its own folder, named after its kind. Generated images are
//! seeded by their kind, so no two cases share content (or a content hash).
//!
//! Files are recognised by content (magic bytes, as `image::guess_format` sees them), never by
//! extension: only jpeg, png, webp, gif, bmp and tiff become jobs; anything else is `not_an_image`.
//! The size rules, all decided from the header before any pixel is decoded: a 0 side is `empty`;
//! more than 100,000,000 pixels, a side over 65,535, a file over 256 MiB or a decoded buffer over
//! the memory budget is `too_large`; a long/short side ratio over 100 is `extreme_aspect`. Each
//! oversized case breaks exactly one of these rules, save the 1,000,000 x 1 and 1 x 1,000,000
//! strips, which break both the side and the aspect rule and expect `extreme_aspect`: the aspect
//! rule must win for them (70,000 x 1,000 and 65,536 x 1,000, aspect 70 and 65.5, are `too_large`
//! by the side rule alone). The oversized files are real headers over a truncated body: decoded,
//! they would fail `corrupt` instead, so the reason label shows the check ran before the decode.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::fs;
use std::io::Cursor;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::symlink;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use image::codecs::gif::{GifEncoder, Repeat};
use image::codecs::jpeg::JpegEncoder;
use image::{Delay, DynamicImage, Frame, ImageBuffer, ImageFormat, LumaA, Rgb, RgbImage, Rgba, RgbaImage};

use crate::fixtures;

/// What the pipeline must do with a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// embedded and searchable
    Indexed,
    /// recorded as a failed job with this reason label
    Failed(&'static str),
    /// passed over by the scan with this reason (never becomes a job)
    Skipped(&'static str),
}

#[derive(Debug, Clone)]
pub struct Case {
    /// short kebab-case name of the kind, unique
    pub kind: &'static str,
    /// where it was written (absolute; may be non-UTF-8)
    pub path: PathBuf,
    pub expect: Expect,
}

/// The committed photos, copied as they are (all must be indexed).
const PHOTOS: [(&str, &str); 16] = [
    ("photo-astronaut-grey", "astronaut-grey.jpg"),
    ("photo-astronaut-small-tiff", "astronaut-small.tiff"),
    ("photo-astronaut", "astronaut.jpg"),
    ("photo-chelsea-alpha-png", "chelsea-alpha.png"),
    ("photo-chelsea-cmyk", "chelsea-cmyk.jpg"),
    ("photo-chelsea-exif6", "chelsea-exif6.jpg"),
    ("photo-chelsea", "chelsea.jpg"),
    ("photo-coffee-exif3", "coffee-exif3.jpg"),
    ("photo-coffee-grey16-png", "coffee-grey16.png"),
    ("photo-coffee-grey8-png", "coffee-grey8.png"),
    ("photo-coffee-lossless-webp", "coffee-lossless.webp"),
    ("photo-coffee-small-bmp", "coffee-small.bmp"),
    ("photo-hubble-large", "hubble-large.jpg"),
    ("photo-rocket-exif8", "rocket-exif8.jpg"),
    ("photo-rocket-palette-gif", "rocket-palette.gif"),
    ("photo-rocket-portrait", "rocket-portrait.jpg"),
];

/// The committed real-world JPEG variants (see `tests/fixtures/unusual/README.md`), all indexed.
const UNUSUAL: [(&str, &str); 8] = [
    ("jpeg-422-subsampling", "chelsea-422.jpg"),
    ("jpeg-444-subsampling", "chelsea-444.jpg"),
    ("jpeg-arithmetic-progressive", "chelsea-arithmetic-progressive.jpg"),
    ("jpeg-arithmetic", "chelsea-arithmetic.jpg"),
    ("jpeg-optimized-huffman", "chelsea-optimized.jpg"),
    ("jpeg-progressive", "chelsea-progressive.jpg"),
    ("jpeg-restart-markers", "chelsea-restart.jpg"),
    ("jpeg-lossless-rot90", "chelsea-rot90.jpg"),
];

/// Writes the corpus into `dir` (which exists and is empty) and says what each file must become.
pub fn write(dir: &Path) -> Vec<Case> {
    let root = dir.canonicalize().unwrap_or_else(|e| panic!("hostile corpus: {} cannot be resolved: {e}", dir.display()));
    let mut c = Corpus { root, cases: Vec::new() };
    let mut rng = XorShift::new();
    indexed(&mut c, &mut rng);
    failed(&mut c, &mut rng);
    skipped(&mut c, &mut rng);
    c.cases
}

/// Counts the cases by expectation: (indexed, failed, skipped).
pub fn summary(cases: &[Case]) -> (usize, usize, usize) {
    let mut counts = (0, 0, 0);
    for case in cases {
        match case.expect {
            Expect::Indexed => counts.0 += 1,
            Expect::Failed(_) => counts.1 += 1,
            Expect::Skipped(_) => counts.2 += 1,
        }
    }
    counts
}

// ---------------------------------------------------------------------------------------------
// Indexed: good and unusual files the pipeline must embed.
// ---------------------------------------------------------------------------------------------

fn indexed(c: &mut Corpus, rng: &mut XorShift) {
    use Expect::Indexed;

    for (kind, name) in PHOTOS {
        c.file(kind, name, &photo(name), Indexed);
    }
    for (kind, name) in UNUSUAL {
        c.file(kind, name, &unusual(name), Indexed);
    }

    // Content decides, never the extension.
    c.file("png-named-jpg", "really-a-png.jpg", &png_of("png-named-jpg", 64, 48), Indexed);
    c.file("jpeg-named-gif", "really-a-jpeg.gif", &jpeg_of("jpeg-named-gif", 64, 48), Indexed);
    c.file("no-extension", "photo", &jpeg_of("no-extension", 64, 48), Indexed);
    c.file("uppercase-extension", "PHOTO.JPG", &jpeg_of("uppercase-extension", 64, 48), Indexed);

    // Names that break naive quoting, URL building, line-based logs and UTF-8 assumptions.
    c.file("name-with-spaces", "my holiday  photo (1).png", &png_of("name-with-spaces", 64, 48), Indexed);
    c.file("name-unicode", "café ñ 日本.png", &png_of("name-unicode", 64, 48), Indexed);
    // the same word decomposed (e + combining acute), as macOS file systems write names
    c.file("name-unicode-nfd", "cafe\u{301}-nfd.png", &png_of("name-unicode-nfd", 64, 48), Indexed);
    c.file("name-emoji", "📷 snapshot 🐈.png", &png_of("name-emoji", 64, 48), Indexed);
    // looks like an option to any command line that gets it unguarded
    c.file("name-leading-dash", "-x.png", &png_of("name-leading-dash", 64, 48), Indexed);
    c.file("name-newline", "new\nline.png", &png_of("name-newline", 64, 48), Indexed);
    c.file("name-trailing-space", "trailing-space.png ", &png_of("name-trailing-space", 64, 48), Indexed);
    c.file("name-shell-and-url-metachars", "it's \"quoted\" $HOME; a|b&c <d> \\e *f? 100% #g.png", &png_of("name-shell-and-url-metachars", 64, 48), Indexed);
    // Latin-1 bytes: a valid Unix file name that is not valid UTF-8
    c.file("name-not-utf8", OsStr::from_bytes(b"latin1-\xe9t\xe9.png"), &png_of("name-not-utf8", 64, 48), Indexed);
    // 255 bytes, the longest name most file systems take
    let long = format!("long-{}.png", "x".repeat(255 - "long-.png".len()));
    c.file("name-max-length", long, &png_of("name-max-length", 64, 48), Indexed);
    // a dot file is still a file; nothing in the scan hides it
    c.file("hidden-dotfile", ".hidden.png", &png_of("hidden-dotfile", 64, 48), Indexed);
    let mut deep = c.folder("deep-path");
    for level in 1..=20 {
        deep.push(format!("level-{level:02}"));
    }
    c.file_at("deep-path", deep.join("deep.png"), &png_of("deep-path", 64, 48), Indexed);
    // a directory whose name looks like an image: the scan enters it; the PNG inside is the case
    let inside = c.folder("png-inside-dir-named-jpg").join("folder.jpg").join("inside.png");
    c.file_at("png-inside-dir-named-jpg", inside, &png_of("png-inside-dir-named-jpg", 64, 48), Indexed);

    // JPEGs with more than one image's worth of bytes.
    // A "motion photo" (Google/Samsung): a complete JPEG, then an MP4 appended after its EOI. The
    // video holds FF DA and FF D8 pairs and, past the last FF DA, no FF D9, so a completeness check
    // that pairs the file's last start-of-scan with a later end-of-image calls this truncated.
    let mut motion = photo("astronaut.jpg");
    motion.extend_from_slice(&mp4_trailer(rng, 50 * 1024));
    c.file("jpeg-motion-photo", "PXL_20240101_motion.jpg", &motion, Indexed);
    // MPO-like (stereo cameras): two complete JPEGs back to back; the first is the picture
    let mut mpo = photo("chelsea.jpg");
    mpo.extend_from_slice(&photo("rocket-portrait.jpg"));
    c.file("jpeg-mpo-two-frames", "stereo.jpg", &mpo, Indexed);
    // 60 KB of APP2 before the frame (cameras put FlashPix "FPXR" data there; not tagged ICC_PROFILE,
    // so no decoder tries to apply it as a colour profile). Random bytes, FF D9 and FF DA included:
    // only the segment length says where it ends.
    let mut app2 = b"FPXR\0".to_vec();
    app2.extend_from_slice(&rng.bytes(60 * 1024));
    c.file("jpeg-60kb-app2-segment", "big-app2.jpg", &with_app_segment(&photo("chelsea.jpg"), 0xE2, &app2), Indexed);
    // a file pre-allocated by a copy tool: the JPEG, then 64 KB of zeros after its EOI
    let mut padded = photo("rocket-exif8.jpg");
    padded.resize(padded.len() + 64 * 1024, 0);
    c.file("jpeg-zero-padded", "zero-padded.jpg", &padded, Indexed);

    // Tiny and unusual pixel formats.
    c.file("png-1x1", "one-pixel.png", &png_of("png-1x1", 1, 1), Indexed);
    c.file("jpeg-1x1", "one-pixel.jpg", &jpeg_of("jpeg-1x1", 1, 1), Indexed);
    let rgba16 = ImageBuffer::<Rgba<u16>, Vec<u16>>::from_fn(48, 32, |x, y| Rgba([(x * 1365) as u16, (y * 2047) as u16, 40_000, if x < 24 { 65_535 } else { 30_000 }]));
    c.file("png-rgba16", "rgba16.png", &encode(&DynamicImage::ImageRgba16(rgba16), ImageFormat::Png), Indexed);
    let grey_alpha = ImageBuffer::<LumaA<u8>, Vec<u8>>::from_fn(48, 32, |x, y| LumaA([(x * 5) as u8, (255 - y * 7) as u8]));
    c.file("png-grey-alpha", "grey-alpha.png", &encode(&DynamicImage::ImageLumaA8(grey_alpha), ImageFormat::Png), Indexed);
    c.file("png-palette-trns", "palette.png", &png_palette(seed_of("png-palette-trns")), Indexed);
    c.file("png-grey-1bit", "one-bit.png", &png_one_bit(seed_of("png-grey-1bit")), Indexed);
    c.file("png-interlaced-adam7", "interlaced.png", &png_interlaced(33, 17, seed_of("png-interlaced-adam7")), Indexed);
    c.file("png-animated-apng", "animated.png", &png_apng(seed_of("png-animated-apng")), Indexed);
    // Stable Diffusion style: a large tEXt chunk (generation parameters) before the pixels
    let mut text = b"parameters\0".to_vec();
    while text.len() < 200 * 1024 {
        text.extend_from_slice(b"a photo of a cat, highly detailed, 8k, Steps: 30, Sampler: Euler a, CFG scale: 7\n");
    }
    let big_text = png_grey(24, 16, seed_of("png-big-text-chunk"), vec![(*b"tEXt", text)]);
    c.file("png-big-text-chunk", "big-text.png", &big_text, Indexed);
    // an editor broke the CRC of a metadata (ancillary) chunk: decoders skip it, the pixels are fine
    let mut bad_meta = png_grey(24, 16, seed_of("png-bad-ancillary-crc"), vec![(*b"tEXt", b"Comment\0edited".to_vec())]);
    flip_crc(&mut bad_meta, b"tEXt");
    c.file("png-bad-ancillary-crc", "bad-text-crc.png", &bad_meta, Indexed);
    // data after IEND (an appended zip, as in polyglot files)
    let mut trailing = png_of("png-trailing-junk", 64, 48);
    trailing.extend_from_slice(b"PK\x03\x04");
    trailing.extend_from_slice(&rng.bytes(4096));
    c.file("png-trailing-junk", "trailing-junk.png", &trailing, Indexed);

    // The other formats.
    c.file("gif-animated-3-frames", "animated.gif", &gif_animated(seed_of("gif-animated-3-frames")), Indexed);
    c.file("bmp-rgb", "plain.bmp", &encode(&DynamicImage::ImageRgb8(scene(seed_of("bmp-rgb"), 64, 48)), ImageFormat::Bmp), Indexed);
    c.file("bmp-top-down", "top-down.bmp", &bmp_top_down(21, 12, seed_of("bmp-top-down")), Indexed);
    c.file("tiff-rgb", "plain.tiff", &encode(&DynamicImage::ImageRgb8(scene(seed_of("tiff-rgb"), 64, 48)), ImageFormat::Tiff), Indexed);
    c.file("tiff-big-endian", "motorola.tif", &tiff_grey_be(16, 16, seed_of("tiff-big-endian")), Indexed);
    c.file("webp-lossless", "lossless.webp", &encode(&DynamicImage::ImageRgb8(scene(seed_of("webp-lossless"), 64, 48)), ImageFormat::WebP), Indexed);

    // Shapes and sizes that are unusual but within every limit.
    let pano = blocky_jpeg(2000, 40, |bx, by| [(90 + bx / 4) as u8, (140 - by * 3) as u8, 110]);
    c.file("panorama-2000x40", "panorama.jpg", &pano, Indexed);
    c.file("tall-40x2000", "tall.png", &png_of("tall-40x2000", 40, 2000), Indexed);
    // long side / short side exactly 100: the limit is "over 100", so this one passes
    c.file("png-aspect-exactly-100", "aspect-100.png", &png_of("png-aspect-exactly-100", 1000, 10), Indexed);
    // 12 megapixels, mostly sky: built block by block (see `blocky_jpeg`), a few hundred KB
    let big = blocky_jpeg(4000, 3000, |bx, by| {
        let (dx, dy) = (bx as i64 - 350, by as i64 - 120);
        if dx * dx + dy * dy < 60 * 60 { [235, 70, 160] } else { [(110 + by / 5) as u8, 160, 110] }
    });
    c.file("jpeg-4000x3000", "12-megapixels.jpg", &big, Indexed);
}

// ---------------------------------------------------------------------------------------------
// Failed: sniffed as one of the six formats, so each becomes a job, which fails with a reason.
// ---------------------------------------------------------------------------------------------

fn failed(c: &mut Corpus, rng: &mut XorShift) {
    use Expect::Failed;

    // Headers declaring what must never be decoded. Each is a valid 8-bit grey PNG header (IHDR with
    // a correct CRC) over an IDAT that ends mid-stream, about 600 bytes in all. The two strips break
    // the side rule too (1,000,000 > 65,535): they are `extreme_aspect` only if aspect wins over side.
    c.file("png-header-1000000x1", "wide.png", &png_header_only(1_000_000, 1), Failed("extreme_aspect"));
    c.file("png-header-1x1000000", "tall.png", &png_header_only(1, 1_000_000), Failed("extreme_aspect"));
    // 400 MP
    c.file("png-header-20000x20000", "400-megapixels.png", &png_header_only(20_000, 20_000), Failed("too_large"));
    // 70 MP and aspect 70 are both allowed: only the side (over 65,535) rule catches it
    c.file("png-header-70000x1000", "side-70000.png", &png_header_only(70_000, 1_000), Failed("too_large"));
    // the side rule's boundary: 65,536 is one over
    c.file("png-header-65536x1000", "side-65536.png", &png_header_only(65_536, 1_000), Failed("too_large"));
    // the pixel rule's boundary: 100,010,000 pixels, just over 100,000,000, both sides fine
    c.file("png-header-10001x10000", "just-over-100-megapixels.png", &png_header_only(10_001, 10_000), Failed("too_large"));
    // 65500 is libjpeg's largest side; 4.3 gigapixels. The SOF of a small real JPEG is patched,
    // so the scan data is far too short: decoding would fail `corrupt`.
    let small_jpeg = jpeg_of("jpeg-sof-patched", 16, 16);
    c.file("jpeg-sof-65500x65500", "gigapixel.jpg", &patch_sof(&small_jpeg, 65_500, 65_500), Failed("too_large"));
    // 24-bit BMP header declaring 30000 x 30000 (900 MP), then 1 KB of pixels
    let mut bmp = bmp_header(30_000, 30_000);
    bmp.extend_from_slice(&rng.bytes(1024));
    c.file("bmp-header-30000x30000", "huge.bmp", &bmp, Failed("too_large"));
    // a GIF "bomb": 65535 x 65535 logical screen (sides allowed, 4.3 GP not) around a 1x1 frame
    c.file("gif-screen-65535x65535", "screen-bomb.gif", &gif_screen(65_535, 65_535), Failed("too_large"));
    // 99 MP (under the pixel limit, about square) of 32-bit float RGBA: 16 bytes a pixel make a
    // 1.58 GB decoded buffer, over the memory budget (1 GiB or less) though every dimension passes
    c.file("tiff-rgba-f32-over-memory-budget", "float.tif", &tiff_rgba_f32_header(9_900, 10_000), Failed("too_large"));
    // a real, decodable PNG of aspect 101, one over the limit
    c.file("png-aspect-101", "aspect-101.png", &png_of("png-aspect-101", 1010, 10), Failed("extreme_aspect"));
    // 300,000 pixels, sides fine, aspect 3000
    c.file("jpeg-sof-30000x10", "strip.jpg", &patch_sof(&small_jpeg, 30_000, 10), Failed("extreme_aspect"));

    // Empty images. libjpeg-turbo itself refuses a 0 side in SOF ("Empty JPEG image"): the
    // pipeline must still say `empty`, not `corrupt`.
    c.file("jpeg-sof-0x0", "zero.jpg", &patch_sof(&small_jpeg, 0, 0), Failed("empty"));
    // GIF with a 0 x 0 logical screen: the decoder opens it and reports 0 x 0
    c.file("gif-screen-0x0", "zero.gif", &gif_screen(0, 0), Failed("empty"));

    // Corrupt and truncated files.
    // the PNG decoder rejects a 0 in IHDR outright, before any size rule can look at it
    c.file("png-ihdr-width-0", "zero-width.png", &png_file(&ihdr(0, 16, 8, 0, 0), &[(*b"IDAT", zlib_stored(&[0; 17], true))]), Failed("corrupt"));
    let chelsea = photo("chelsea.jpg");
    c.file("jpeg-truncated-60pct", "truncated.jpg", &chelsea[..chelsea.len() * 6 / 10], Failed("corrupt"));
    // everything but the final EOI marker
    let whole = jpeg_of("jpeg-missing-eoi", 64, 48);
    assert!(whole.ends_with(&[0xFF, 0xD9]), "the JPEG encoder ends its files with EOI");
    c.file("jpeg-missing-eoi", "no-eoi.jpg", &whole[..whole.len() - 2], Failed("corrupt"));
    let grey8 = photo("coffee-grey8.png");
    c.file("png-truncated-50pct", "truncated.png", &grey8[..grey8.len() / 2], Failed("corrupt"));
    let mut bad_ihdr = png_grey(16, 16, seed_of("png-bad-ihdr-crc"), Vec::new());
    flip_crc(&mut bad_ihdr, b"IHDR");
    c.file("png-bad-ihdr-crc", "bad-crc.png", &bad_ihdr, Failed("corrupt"));
    c.file("png-signature-only", "signature.png", b"\x89PNG\r\n\x1a\n", Failed("corrupt"));
    // the three bytes every sniffer needs to call it a JPEG, and nothing else
    c.file("jpeg-magic-only", "magic.jpg", &[0xFF, 0xD8, 0xFF], Failed("corrupt"));
    // SOI, a JFIF APP0, EOI: a JPEG with no frame and no scan
    let no_frame = [0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10, b'J', b'F', b'I', b'F', 0x00, 0x01, 0x01, 0x00, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0xFF, 0xD9];
    c.file("jpeg-app0-then-eoi", "no-frame.jpg", &no_frame, Failed("corrupt"));
    // GIF89a and a 16 x 16 logical screen descriptor, then the file ends
    c.file("gif-header-only", "header.gif", b"GIF89a\x10\x00\x10\x00\x00\x00\x00", Failed("corrupt"));
    // 'BM', then 20 bytes: an absurd data offset and an info-header size of 4, which the decoder
    // rejects as too small (a size it merely does not know would read as unsupported instead)
    let mut bmp_junk = b"BM".to_vec();
    bmp_junk.extend_from_slice(&u32::MAX.to_le_bytes()); // file size
    bmp_junk.extend_from_slice(&0xDEAD_BEEFu32.to_le_bytes()); // reserved
    bmp_junk.extend_from_slice(&0xFFFF_FFF0u32.to_le_bytes()); // pixel data offset
    bmp_junk.extend_from_slice(&4u32.to_le_bytes()); // info header size
    bmp_junk.extend_from_slice(&[0xA5; 4]);
    c.file("bmp-junk-header", "junk.bmp", &bmp_junk, Failed("corrupt"));
    // little-endian TIFF header whose first IFD lies past the end of the file
    let mut tiff = b"II*\0".to_vec();
    tiff.extend_from_slice(&4096u32.to_le_bytes());
    tiff.extend_from_slice(&[0; 8]);
    c.file("tiff-ifd-past-eof", "header.tif", &tiff, Failed("corrupt"));
    // RIFF/WEBP with a "VP8 " chunk of random bytes (no VP8 frame start code)
    let mut webp = b"RIFF".to_vec();
    webp.extend_from_slice(&28u32.to_le_bytes()); // "WEBP" + chunk header + 16 bytes
    webp.extend_from_slice(b"WEBPVP8 ");
    webp.extend_from_slice(&16u32.to_le_bytes());
    webp.extend_from_slice(&rng.bytes(16));
    c.file("webp-vp8-junk", "junk.webp", &webp, Failed("corrupt"));

    // Sniffed as one of the six, but using something the decoder does not implement.
    // A grey TIFF compressed with JPEG 2000 (compression 34712): the header reads fine, the strip
    // cannot be decompressed.
    c.file("tiff-jpeg2000-compression", "jpeg2000.tif", &tiff_unknown_compression(seed_of("tiff-jpeg2000-compression")), Failed("unsupported_format"));
    // A text file that happens to begin with "BM" is sniffed as a BMP (the magic is two bytes); its
    // bytes 14..18, read as the info-header size, name no header type the decoder knows.
    c.file("bmp-magic-in-text", "car-notes.txt", b"BMW 320i service history\n- 2019: oil change\n- 2021: brakes\n", Failed("unsupported_format"));
}

// ---------------------------------------------------------------------------------------------
// Skipped: passed over by the scan, never a job.
// ---------------------------------------------------------------------------------------------

fn skipped(c: &mut Corpus, rng: &mut XorShift) {
    let not_image = Expect::Skipped("not_an_image");

    c.file("empty-file", "empty.jpg", b"", not_image.clone());
    c.file("text-named-jpg", "notes.jpg", b"This is not a picture, only a note with a .jpg name.\n", not_image.clone());
    // what a failed download leaves behind
    c.file("html-named-jpg", "download.jpg", b"<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head><body><h1>Not Found</h1></body></html>\n", not_image.clone());
    c.file("pdf-named-png", "scan.png", b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\n%%EOF\n", not_image.clone());
    c.file(
        "svg-named-png",
        "logo.png",
        b"<?xml version=\"1.0\"?>\n<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"10\" height=\"10\"><rect width=\"10\" height=\"10\"/></svg>\n",
        not_image.clone(),
    );
    let mut zip = b"PK\x03\x04".to_vec();
    zip.extend_from_slice(&rng.bytes(256));
    c.file("zip-named-png", "archive.png", &zip, not_image.clone());
    // RIFF, but WAVE rather than WEBP
    let mut wav = b"RIFF".to_vec();
    wav.extend_from_slice(&36u32.to_le_bytes());
    wav.extend_from_slice(b"WAVEfmt \x10\0\0\0\x01\0\x01\0\x44\xac\0\0\x88\x58\x01\0\x02\0\x10\0data\0\0\0\0");
    c.file("wav-named-webp", "sound.webp", &wav, not_image.clone());
    // ISO-BMFF boxes: HEIC (phones), AVIF (sniffed as AVIF, not one of the six), MP4 named .jpg
    let mut heic = b"\0\0\0\x18ftypheic\0\0\0\0mif1heic".to_vec();
    heic.extend_from_slice(b"\0\0\0\x0cmeta\0\0\0\0");
    c.file("heic-ftyp", "IMG_0001.heic", &heic, not_image.clone());
    let mut avif = b"\0\0\0\x1cftypavif\0\0\0\0avifmif1miaf".to_vec();
    avif.extend_from_slice(b"\0\0\0\x0cmeta\0\0\0\0");
    c.file("avif-ftyp", "picture.avif", &avif, not_image.clone());
    let mp4 = mp4_trailer(rng, 4096);
    c.file("mp4-named-jpg", "clip.jpg", &mp4, not_image.clone());
    // pre-allocated and never filled (an interrupted copy)
    c.file("zero-filled-png", "zeros.png", &[0; 4096], not_image.clone());
    // a real JPEG behind 16 bytes of junk: the magic must be at the start
    let mut garbage = b"garbage-prefix!!".to_vec();
    garbage.extend_from_slice(&jpeg_of("jpeg-after-leading-garbage", 32, 32));
    c.file("jpeg-after-leading-garbage", "prefixed.jpg", &garbage, not_image.clone());
    // SOI alone: the sniffers need FF D8 FF
    c.file("two-bytes-ff-d8", "soi.jpg", &[0xFF, 0xD8], not_image.clone());

    // Image formats `image` can sniff (or decode) that the pipeline does not take.
    let mut qoi = b"qoif".to_vec();
    qoi.extend_from_slice(&2u32.to_be_bytes());
    qoi.extend_from_slice(&2u32.to_be_bytes());
    qoi.extend_from_slice(&[3, 0, 0xFE, 200, 30, 30, 0xC2, 0, 0, 0, 0, 0, 0, 0, 1]);
    c.file("qoi-image", "image.qoi", &qoi, not_image.clone());
    let mut dds = b"DDS ".to_vec();
    dds.extend_from_slice(&124u32.to_le_bytes());
    dds.extend_from_slice(&[0; 120]);
    c.file("dds-texture", "texture.dds", &dds, not_image.clone());
    let mut farbfeld = b"farbfeld".to_vec();
    farbfeld.extend_from_slice(&2u32.to_be_bytes());
    farbfeld.extend_from_slice(&2u32.to_be_bytes());
    farbfeld.extend_from_slice(&[0x7F; 32]);
    c.file("farbfeld-image", "image.ff", &farbfeld, not_image.clone());
    let mut ico: Vec<u8> = vec![0, 0, 1, 0, 1, 0, 16, 16, 0, 0, 1, 0, 32, 0];
    ico.extend_from_slice(&64u32.to_le_bytes());
    ico.extend_from_slice(&22u32.to_le_bytes());
    ico.extend_from_slice(&[0; 64]);
    c.file("ico-icon", "favicon.ico", &ico, not_image.clone());
    let mut pnm = b"P6\n4 4\n255\n".to_vec();
    pnm.extend_from_slice(&[0x80; 48]);
    c.file("pnm-image", "image.ppm", &pnm, not_image.clone());
    let mut hdr = b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y 2 +X 2\n".to_vec();
    hdr.extend_from_slice(&[0x80u8, 0x80, 0x80, 0x81].repeat(4));
    c.file("radiance-hdr", "light.hdr", &hdr, not_image.clone());
    let mut exr: Vec<u8> = vec![0x76, 0x2F, 0x31, 0x01, 0x02, 0, 0, 0];
    exr.extend_from_slice(&[0; 64]);
    c.file("openexr-image", "render.exr", &exr, not_image.clone());
    // TGA has no magic at all: no sniffer can see it
    let mut tga: Vec<u8> = vec![0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 8, 0, 8, 0, 24, 0x20];
    tga.extend_from_slice(&[0x40; 8 * 8 * 3]);
    c.file("tga-image", "image.tga", &tga, not_image.clone());

    // Not regular files: reading them blocks (a FIFO with no writer), fails (a socket) or never
    // ends (/dev/zero, /dev/urandom). The scan must look at the file type, not open them.
    let not_regular = Expect::Skipped("not_a_regular_file");
    let fifo = c.folder("fifo-named-jpg").join("pipe.jpg");
    let status = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap_or_else(|e| panic!("hostile corpus: run mkfifo for {}: {e}", fifo.display()));
    assert!(status.success(), "hostile corpus: mkfifo {} failed: {status}", fifo.display());
    c.push("fifo-named-jpg", fifo, not_regular.clone());
    // the socket file stays after the listener is dropped
    let sock = c.folder("unix-socket-named-png").join("sock.png");
    drop(UnixListener::bind(&sock).unwrap_or_else(|e| panic!("hostile corpus: bind a unix socket at {} (such paths must be under 108 bytes): {e}", sock.display())));
    c.push("unix-socket-named-png", sock, not_regular.clone());
    // links that lead out of the indexed folder (to devices, to a file elsewhere) are never
    // followed: skipped as `outside_root` before anything looks at what they point to
    let outside = Expect::Skipped("outside_root");
    for (kind, name, target) in [
        ("symlink-to-dev-zero", "zero.jpg", "/dev/zero"),
        ("symlink-to-dev-urandom", "random.png", "/dev/urandom"),
        ("symlink-to-dev-null", "null.gif", "/dev/null"),
        ("symlink-to-a-file-outside", "passwd.png", "/etc/passwd"),
    ] {
        let link = c.folder(kind).join(name);
        symlink(target, &link).unwrap_or_else(|e| panic!("hostile corpus: link {} -> {target}: {e}", link.display()));
        c.push(kind, link, outside.clone());
    }
    // a link to its own directory: a walk that follows links must notice and not loop
    let link = c.folder("symlink-loop").join("self");
    symlink(".", &link).unwrap_or_else(|e| panic!("hostile corpus: link {} -> .: {e}", link.display()));
    c.push("symlink-loop", link, Expect::Skipped("symlink_loop"));
}

// ---------------------------------------------------------------------------------------------
// Writing.
// ---------------------------------------------------------------------------------------------

struct Corpus {
    root: PathBuf,
    cases: Vec<Case>,
}

impl Corpus {
    /// The folder of one case (`<root>/<kind>`), created.
    fn folder(&self, kind: &str) -> PathBuf {
        let dir = self.root.join(kind);
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("hostile corpus: create {}: {e}", dir.display()));
        dir
    }

    /// Writes `<root>/<kind>/<name>` and records the case.
    fn file(&mut self, kind: &'static str, name: impl AsRef<OsStr>, bytes: &[u8], expect: Expect) {
        let path = self.folder(kind).join(name.as_ref());
        self.file_at(kind, path, bytes, expect);
    }

    /// Writes `path` (its folders created) and records the case.
    fn file_at(&mut self, kind: &'static str, path: PathBuf, bytes: &[u8], expect: Expect) {
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).unwrap_or_else(|e| panic!("hostile corpus: create {}: {e}", parent.display()));
        }
        fs::write(&path, bytes).unwrap_or_else(|e| panic!("hostile corpus: write {}: {e}", path.display()));
        self.push(kind, path, expect);
    }

    fn push(&mut self, kind: &'static str, path: PathBuf, expect: Expect) {
        assert!(!self.cases.iter().any(|c| c.kind == kind), "hostile corpus: kind {kind} used twice");
        self.cases.push(Case { kind, path, expect });
    }
}

fn photo(name: &str) -> Vec<u8> {
    let path = fixtures().join("photos").join(name);
    fs::read(&path).unwrap_or_else(|e| panic!("hostile corpus: read fixture {}: {e}", path.display()))
}

fn unusual(name: &str) -> Vec<u8> {
    let path = fixtures().join("unusual").join(name);
    fs::read(&path).unwrap_or_else(|e| panic!("hostile corpus: read fixture {}: {e}", path.display()))
}

/// Deterministic pseudo-random bytes (xorshift64 from a constant seed).
struct XorShift(u64);

impl XorShift {
    fn new() -> Self {
        XorShift(0x9E37_79B9_7F4A_7C15)
    }

    fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| (self.next_u64() >> 32) as u8).collect()
    }
}

/// FNV-1a of the kind: the seed of a generated image, so each case's pixels differ.
fn seed_of(kind: &str) -> u32 {
    kind.bytes().fold(0x811C_9DC5u32, |h, b| (h ^ b as u32).wrapping_mul(0x0100_0193))
}

// ---------------------------------------------------------------------------------------------
// Images made with the `image` encoders (small only: generic encoder code is compiled into this
// unoptimized test crate).
// ---------------------------------------------------------------------------------------------

/// Smooth colour gradients, shifted by the seed.
fn scene(seed: u32, width: u32, height: u32) -> RgbImage {
    let [r, g, b, k] = seed.wrapping_mul(0x9E37_79B1).to_le_bytes();
    RgbImage::from_fn(width, height, |x, y| {
        let fx = (x * 256 / width) as u8;
        let fy = (y * 256 / height) as u8;
        Rgb([r.wrapping_add(fx), g.wrapping_add(fy), b ^ k ^ (fx / 2 + fy / 2)])
    })
}

fn encode(img: &DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, format).unwrap_or_else(|e| panic!("hostile corpus: encode a {format:?}: {e}"));
    out.into_inner()
}

fn png_of(kind: &str, width: u32, height: u32) -> Vec<u8> {
    encode(&DynamicImage::ImageRgb8(scene(seed_of(kind), width, height)), ImageFormat::Png)
}

fn jpeg_of(kind: &str, width: u32, height: u32) -> Vec<u8> {
    let img = scene(seed_of(kind), width, height);
    let mut out = Vec::new();
    JpegEncoder::new_with_quality(&mut out, 85).encode_image(&img).unwrap_or_else(|e| panic!("hostile corpus: encode a jpeg: {e}"));
    out
}

/// Three 64 x 48 frames of four flat colours (few colours: no quantizer runs), looping forever.
fn gif_animated(seed: u32) -> Vec<u8> {
    const COLOURS: [[u8; 4]; 4] = [[200, 30, 30, 255], [30, 160, 60, 255], [40, 60, 200, 255], [240, 220, 40, 255]];
    let frames = (0..3u32).map(|i| {
        let buffer = RgbaImage::from_fn(64, 48, |x, y| Rgba(COLOURS[((x / 16 + y / 16 + i + seed % 4) % 4) as usize]));
        Frame::from_parts(buffer, 0, 0, Delay::from_numer_denom_ms(200, 1))
    });
    let mut out = Vec::new();
    {
        let mut encoder = GifEncoder::new_with_speed(&mut out, 10);
        encoder.set_repeat(Repeat::Infinite).unwrap_or_else(|e| panic!("hostile corpus: gif repeat: {e}"));
        encoder.encode_frames(frames).unwrap_or_else(|e| panic!("hostile corpus: encode gif frames: {e}"));
        // dropping the encoder writes the trailer
    }
    out
}

// ---------------------------------------------------------------------------------------------
// JPEG by hand.
// ---------------------------------------------------------------------------------------------

/// A baseline YCbCr JPEG of `width` x `height` (multiples of 8) made of flat 8x8 blocks: a block has
/// only a DC coefficient, so the entropy data is a few bits a block. A 12-megapixel photo comes out
/// at a few hundred KB in milliseconds, where the `image` encoder would run unoptimized here.
/// `ycc(bx, by)` gives block (bx, by) its Y, Cb, Cr (0..=255).
fn blocky_jpeg(width: u16, height: u16, ycc: impl Fn(u32, u32) -> [u8; 3]) -> Vec<u8> {
    assert!(width.is_multiple_of(8) && height.is_multiple_of(8), "blocky_jpeg takes whole blocks");
    let mut out = vec![0xFF, 0xD8];
    // APP0: JFIF 1.01, no density, no thumbnail
    out.extend_from_slice(&[0xFF, 0xE0, 0x00, 0x10, b'J', b'F', b'I', b'F', 0x00, 0x01, 0x01, 0x00, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00]);
    // DQT: table 0, every step 8, so a flat block's quantized DC is its value - 128
    out.extend_from_slice(&[0xFF, 0xDB, 0x00, 0x43, 0x00]);
    out.extend_from_slice(&[8; 64]);
    // SOF0: 8-bit, height, width, components 1..3 (Y, Cb, Cr), none subsampled, all on table 0
    out.extend_from_slice(&[0xFF, 0xC0, 0x00, 0x11, 0x08]);
    out.extend_from_slice(&height.to_be_bytes());
    out.extend_from_slice(&width.to_be_bytes());
    out.extend_from_slice(&[0x03, 0x01, 0x11, 0x00, 0x02, 0x11, 0x00, 0x03, 0x11, 0x00]);
    // DHT: DC table 0 codes categories 0..=11 as 0000..1011; AC table 0 holds only EOB, code "0"
    out.extend_from_slice(&[0xFF, 0xC4, 0x00, 0x31, 0x00]);
    out.extend_from_slice(&[0, 0, 0, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    out.extend_from_slice(&[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
    out.push(0x10);
    out.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    out.push(0x00);
    // SOS: the three components, DC/AC tables 0/0, spectral selection 0..63, no approximation
    out.extend_from_slice(&[0xFF, 0xDA, 0x00, 0x0C, 0x03, 0x01, 0x00, 0x02, 0x00, 0x03, 0x00, 0x00, 0x3F, 0x00]);
    let mut bits = BitWriter::default();
    let mut predictor = [0i32; 3];
    for by in 0..u32::from(height) / 8 {
        for bx in 0..u32::from(width) / 8 {
            let px = ycc(bx, by);
            for (component, pred) in predictor.iter_mut().enumerate() {
                let dc = i32::from(px[component]) - 128;
                let diff = dc - *pred;
                *pred = dc;
                // the category: how many bits the difference needs (0 for none)
                let size = 32 - diff.unsigned_abs().leading_zeros();
                bits.put(size, 4);
                if size > 0 {
                    // negative differences are stored as diff + 2^size - 1
                    let value = if diff < 0 { diff + (1 << size) - 1 } else { diff };
                    bits.put(value as u32, size);
                }
                bits.put(0, 1); // EOB: every AC coefficient is zero
            }
        }
    }
    out.extend_from_slice(&bits.finish());
    out.extend_from_slice(&[0xFF, 0xD9]);
    out
}

/// Entropy-coded data: bits most significant first, a 0x00 stuffed after every 0xFF byte.
#[derive(Default)]
struct BitWriter {
    out: Vec<u8>,
    acc: u32,
    len: u32,
}

impl BitWriter {
    /// Appends the low `count` bits of `value`.
    fn put(&mut self, value: u32, count: u32) {
        for i in (0..count).rev() {
            self.acc = (self.acc << 1) | ((value >> i) & 1);
            self.len += 1;
            if self.len == 8 {
                let byte = self.acc as u8;
                self.out.push(byte);
                if byte == 0xFF {
                    self.out.push(0x00);
                }
                self.acc = 0;
                self.len = 0;
            }
        }
    }

    /// Pads the last byte with 1 bits, as the standard asks.
    fn finish(mut self) -> Vec<u8> {
        while self.len != 0 {
            self.put(1, 1);
        }
        self.out
    }
}

/// Where the frame header (SOF0..SOF15, not DHT/JPG/DAC) starts, walking the segments after SOI.
fn sof_offset(jpeg: &[u8]) -> usize {
    let mut pos = 2;
    while pos + 4 <= jpeg.len() {
        assert_eq!(jpeg[pos], 0xFF, "hostile corpus: JPEG segment expected at byte {pos}");
        let marker = jpeg[pos + 1];
        if marker == 0xFF {
            pos += 1; // fill byte
            continue;
        }
        if (0xC0..=0xCF).contains(&marker) && !matches!(marker, 0xC4 | 0xC8 | 0xCC) {
            return pos;
        }
        if marker == 0xDA {
            break;
        }
        pos += 2 + usize::from(u16::from_be_bytes([jpeg[pos + 2], jpeg[pos + 3]]));
    }
    panic!("hostile corpus: no SOF marker before the scan")
}

/// The JPEG with its frame header declaring `width` x `height`; the scan data is left as it was.
fn patch_sof(jpeg: &[u8], width: u16, height: u16) -> Vec<u8> {
    let mut out = jpeg.to_vec();
    let sof = sof_offset(&out);
    // FF Cn, length (2), precision (1), then height and width
    out[sof + 5..sof + 7].copy_from_slice(&height.to_be_bytes());
    out[sof + 7..sof + 9].copy_from_slice(&width.to_be_bytes());
    out
}

/// The JPEG with an APPn segment (`marker` E0..EF) inserted after its leading APP segments.
fn with_app_segment(jpeg: &[u8], marker: u8, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() + 2;
    assert!(len <= 0xFFFF, "a JPEG segment holds at most 65,533 bytes");
    let mut pos = 2;
    while pos + 4 <= jpeg.len() && jpeg[pos] == 0xFF && (0xE0..=0xEF).contains(&jpeg[pos + 1]) {
        pos += 2 + usize::from(u16::from_be_bytes([jpeg[pos + 2], jpeg[pos + 3]]));
    }
    let mut out = jpeg[..pos].to_vec();
    out.extend_from_slice(&[0xFF, marker]);
    out.extend_from_slice(&(len as u16).to_be_bytes());
    out.extend_from_slice(payload);
    out.extend_from_slice(&jpeg[pos..]);
    out
}

/// An MP4 as phones append it: an `ftyp` box, then an `mdat` of `body` random bytes. JPEG-looking
/// markers (FF D8 FF E1, FF DA) are planted in it, one FF DA near the end, and every FF D9 pair is
/// removed, so no end-of-image follows the file's last start-of-scan.
fn mp4_trailer(rng: &mut XorShift, body: usize) -> Vec<u8> {
    assert!(body >= 1024);
    let mut data = rng.bytes(body);
    for i in 0..data.len() - 1 {
        if data[i] == 0xFF && data[i + 1] == 0xD9 {
            data[i + 1] = 0x00;
        }
    }
    for (n, at) in [body / 8, body / 3, body / 2, body * 3 / 4].into_iter().enumerate() {
        let planted: [u8; 4] = if n % 2 == 0 { [0xFF, 0xD8, 0xFF, 0xE1] } else { [0xFF, 0xDA, 0x00, 0x0C] };
        data[at..at + 4].copy_from_slice(&planted);
    }
    data[body - 64..body - 60].copy_from_slice(&[0xFF, 0xDA, 0x00, 0x0C]);
    let mut out = b"\0\0\0\x18ftypmp42\0\0\0\0mp42isom".to_vec();
    out.extend_from_slice(&((body + 8) as u32).to_be_bytes());
    out.extend_from_slice(b"mdat");
    out.extend_from_slice(&data);
    out
}

// ---------------------------------------------------------------------------------------------
// PNG by hand: chunks with real CRCs, zlib streams of stored (uncompressed) deflate blocks.
// ---------------------------------------------------------------------------------------------

fn crc32(parts: &[&[u8]]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for part in parts {
        for &byte in *part {
            crc ^= u32::from(byte);
            for _ in 0..8 {
                crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
            }
        }
    }
    !crc
}

fn adler32(data: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for &byte in data {
        a = (a + u32::from(byte)) % 65_521;
        b = (b + a) % 65_521;
    }
    (b << 16) | a
}

/// A zlib stream holding `data` in stored blocks; unfinished (no final block, no checksum) unless
/// `finish`, which a decoder reads as a stream cut short.
fn zlib_stored(data: &[u8], finish: bool) -> Vec<u8> {
    let mut out = vec![0x78, 0x01];
    let blocks: Vec<&[u8]> = if data.is_empty() { vec![data] } else { data.chunks(65_535).collect() };
    let count = blocks.len();
    for (i, block) in blocks.into_iter().enumerate() {
        out.push(u8::from(finish && i + 1 == count)); // BFINAL, BTYPE 00 (stored)
        let len = block.len() as u16;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(block);
    }
    if finish {
        out.extend_from_slice(&adler32(data).to_be_bytes());
    }
    out
}

fn png_chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    out.extend_from_slice(&crc32(&[&kind[..], data]).to_be_bytes());
}

fn ihdr(width: u32, height: u32, bit_depth: u8, color_type: u8, interlace: u8) -> Vec<u8> {
    let mut data = Vec::with_capacity(13);
    data.extend_from_slice(&width.to_be_bytes());
    data.extend_from_slice(&height.to_be_bytes());
    data.extend_from_slice(&[bit_depth, color_type, 0, 0, interlace]);
    data
}

/// Signature, IHDR, the chunks in order, IEND.
fn png_file(ihdr_data: &[u8], chunks: &[([u8; 4], Vec<u8>)]) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    png_chunk(&mut out, b"IHDR", ihdr_data);
    for (kind, data) in chunks {
        png_chunk(&mut out, kind, data);
    }
    png_chunk(&mut out, b"IEND", &[]);
    out
}

/// A PNG header declaring an 8-bit grey `width` x `height` image over an IDAT that stops after
/// 512 bytes of an unfinished zlib stream: fine for every header reader, fails any decode.
fn png_header_only(width: u32, height: u32) -> Vec<u8> {
    png_file(&ihdr(width, height, 8, 0, 0), &[(*b"IDAT", zlib_stored(&[0; 512], false))])
}

fn grey_at(x: u32, y: u32, seed: u32) -> u8 {
    ((x * 7 + y * 13 + seed % 251) % 256) as u8
}

/// Scanlines of an 8-bit grey image, each behind filter byte 0 (None).
fn grey_rows(width: u32, height: u32, seed: u32) -> Vec<u8> {
    let mut raw = Vec::with_capacity(((width + 1) * height) as usize);
    for y in 0..height {
        raw.push(0);
        raw.extend((0..width).map(|x| grey_at(x, y, seed)));
    }
    raw
}

/// A complete 8-bit grey PNG, with `extra` chunks between IHDR and IDAT.
fn png_grey(width: u32, height: u32, seed: u32, mut extra: Vec<([u8; 4], Vec<u8>)>) -> Vec<u8> {
    extra.push((*b"IDAT", zlib_stored(&grey_rows(width, height, seed), true)));
    png_file(&ihdr(width, height, 8, 0, 0), &extra)
}

/// 16 x 16, 8-bit palette of 16 colours, the first four partly transparent (as pngquant writes).
fn png_palette(seed: u32) -> Vec<u8> {
    let plte: Vec<u8> = (0..16u32).flat_map(|i| [(i * 16) as u8, (255 - i * 12) as u8, ((i * 40 + seed % 64) % 256) as u8]).collect();
    let trns = vec![0, 64, 128, 192];
    let mut raw = Vec::new();
    for y in 0..16u32 {
        raw.push(0);
        raw.extend((0..16u32).map(|x| ((x + y) % 16) as u8));
    }
    png_file(&ihdr(16, 16, 8, 3, 0), &[(*b"PLTE", plte), (*b"tRNS", trns), (*b"IDAT", zlib_stored(&raw, true))])
}

/// 32 x 8, 1-bit grey (a scanned document's format): four bytes a row.
fn png_one_bit(seed: u32) -> Vec<u8> {
    let mut raw = Vec::new();
    for y in 0..8u32 {
        raw.push(0);
        raw.extend((0..4u32).map(|x| if (x + y + seed % 2).is_multiple_of(2) { 0xF0 } else { 0x3C }));
    }
    png_file(&ihdr(32, 8, 1, 0, 0), &[(*b"IDAT", zlib_stored(&raw, true))])
}

/// 8-bit grey, Adam7-interlaced: the seven passes' scanlines one after the other.
fn png_interlaced(width: u32, height: u32, seed: u32) -> Vec<u8> {
    // (x0, y0, dx, dy) of each pass
    const PASSES: [(u32, u32, u32, u32); 7] = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)];
    let mut raw = Vec::new();
    for (x0, y0, dx, dy) in PASSES {
        let pass_w = if width > x0 { (width - x0).div_ceil(dx) } else { 0 };
        let pass_h = if height > y0 { (height - y0).div_ceil(dy) } else { 0 };
        if pass_w == 0 || pass_h == 0 {
            continue; // an empty pass has no scanlines, not even filter bytes
        }
        for py in 0..pass_h {
            raw.push(0);
            raw.extend((0..pass_w).map(|px| grey_at(x0 + px * dx, y0 + py * dy, seed)));
        }
    }
    png_file(&ihdr(width, height, 8, 0, 1), &[(*b"IDAT", zlib_stored(&raw, true))])
}

/// An APNG of two 24 x 16 grey frames; the IDAT is the first frame (and the still image).
fn png_apng(seed: u32) -> Vec<u8> {
    let (w, h) = (24u32, 16u32);
    let fctl = |sequence: u32| {
        let mut d = Vec::new();
        for v in [sequence, w, h, 0, 0] {
            d.extend_from_slice(&v.to_be_bytes());
        }
        d.extend_from_slice(&1u16.to_be_bytes()); // delay 1/2 s
        d.extend_from_slice(&2u16.to_be_bytes());
        d.extend_from_slice(&[0, 0]); // dispose none, blend source
        d
    };
    let mut actl = 2u32.to_be_bytes().to_vec(); // frames
    actl.extend_from_slice(&0u32.to_be_bytes()); // loop forever
    let mut fdat = 2u32.to_be_bytes().to_vec();
    fdat.extend_from_slice(&zlib_stored(&grey_rows(w, h, seed ^ 0x5A5A), true));
    png_file(&ihdr(w, h, 8, 0, 0), &[(*b"acTL", actl), (*b"fcTL", fctl(0)), (*b"IDAT", zlib_stored(&grey_rows(w, h, seed), true)), (*b"fcTL", fctl(1)), (*b"fdAT", fdat)])
}

/// Flips the CRC of the first chunk of this type.
fn flip_crc(png: &mut [u8], kind: &[u8; 4]) {
    let mut pos = 8;
    while pos + 12 <= png.len() {
        let len = u32::from_be_bytes([png[pos], png[pos + 1], png[pos + 2], png[pos + 3]]) as usize;
        if png[pos + 4..pos + 8] == kind[..] {
            png[pos + 8 + len + 3] ^= 0xFF;
            return;
        }
        pos += 12 + len;
    }
    panic!("hostile corpus: no {} chunk", String::from_utf8_lossy(kind))
}

// ---------------------------------------------------------------------------------------------
// GIF, BMP and TIFF by hand.
// ---------------------------------------------------------------------------------------------

/// GIF89a with a `width` x `height` logical screen, no global colour table, and one frame at 0,0
/// (1 x 1, or 0 x 0 on an empty screen) with a 2-colour local table.
fn gif_screen(width: u16, height: u16) -> Vec<u8> {
    let mut out = b"GIF89a".to_vec();
    out.extend_from_slice(&width.to_le_bytes());
    out.extend_from_slice(&height.to_le_bytes());
    out.extend_from_slice(&[0x00, 0, 0]); // no global table, background 0, no aspect
    let side: u16 = if width == 0 || height == 0 { 0 } else { 1 };
    out.push(0x2C); // image descriptor
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(&side.to_le_bytes());
    out.extend_from_slice(&side.to_le_bytes());
    out.push(0x80); // local colour table of 2 entries
    out.extend_from_slice(&[0, 0, 0, 255, 255, 255]);
    // LZW minimum code size 2, one sub-block holding the 3-bit codes clear (4), 0, end (5); terminator
    out.extend_from_slice(&[0x02, 0x02, 0x44, 0x01, 0x00]);
    out.push(0x3B);
    out
}

/// BITMAPFILEHEADER + BITMAPINFOHEADER for 24-bit BI_RGB pixels at offset 54.
fn bmp_header(width: i32, height: i32) -> Vec<u8> {
    let stride = (width.unsigned_abs() * 3).div_ceil(4) * 4;
    let data_len = stride * height.unsigned_abs();
    let mut out = b"BM".to_vec();
    out.extend_from_slice(&data_len.saturating_add(54).to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&54u32.to_le_bytes());
    out.extend_from_slice(&40u32.to_le_bytes());
    out.extend_from_slice(&width.to_le_bytes());
    out.extend_from_slice(&height.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes()); // planes
    out.extend_from_slice(&24u16.to_le_bytes()); // bits a pixel
    out.extend_from_slice(&0u32.to_le_bytes()); // BI_RGB
    out.extend_from_slice(&data_len.to_le_bytes());
    out.extend_from_slice(&2835i32.to_le_bytes()); // 72 dpi
    out.extend_from_slice(&2835i32.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out
}

/// A top-down BMP (negative height), its rows padded to 4 bytes (21 * 3 = 63 -> 64).
fn bmp_top_down(width: u32, height: u32, seed: u32) -> Vec<u8> {
    let img = scene(seed, width, height);
    let mut out = bmp_header(width as i32, -(height as i32));
    let stride = (width * 3).div_ceil(4) * 4;
    for y in 0..height {
        let row_start = out.len();
        for x in 0..width {
            let Rgb([r, g, b]) = *img.get_pixel(x, y);
            out.extend_from_slice(&[b, g, r]);
        }
        out.resize(row_start + stride as usize, 0);
    }
    out
}

enum TiffValue {
    Short(Vec<u16>),
    Long(Vec<u32>),
}

/// A one-IFD TIFF: header, `pixels` at offset 8 (so StripOffsets is 8), the IFD, then the values
/// longer than 4 bytes.
fn tiff_file(big_endian: bool, pixels: &[u8], mut entries: Vec<(u16, TiffValue)>) -> Vec<u8> {
    entries.sort_by_key(|e| e.0);
    let u16b = |v: u16| if big_endian { v.to_be_bytes() } else { v.to_le_bytes() };
    let u32b = |v: u32| if big_endian { v.to_be_bytes() } else { v.to_le_bytes() };
    let ifd_at = (8 + pixels.len()).div_ceil(2) * 2; // word-aligned
    let mut out = if big_endian { b"MM\0*".to_vec() } else { b"II*\0".to_vec() };
    out.extend_from_slice(&u32b(ifd_at as u32));
    out.extend_from_slice(pixels);
    out.resize(ifd_at, 0);
    let overflow_at = ifd_at + 2 + 12 * entries.len() + 4;
    let mut overflow = Vec::new();
    out.extend_from_slice(&u16b(entries.len() as u16));
    for (tag, value) in &entries {
        let (field_type, count, mut data) = match value {
            TiffValue::Short(v) => (3u16, v.len(), v.iter().flat_map(|&x| u16b(x)).collect::<Vec<u8>>()),
            TiffValue::Long(v) => (4u16, v.len(), v.iter().flat_map(|&x| u32b(x)).collect::<Vec<u8>>()),
        };
        out.extend_from_slice(&u16b(*tag));
        out.extend_from_slice(&u16b(field_type));
        out.extend_from_slice(&u32b(count as u32));
        if data.len() <= 4 {
            data.resize(4, 0); // left-justified in the value field
            out.extend_from_slice(&data);
        } else {
            out.extend_from_slice(&u32b((overflow_at + overflow.len()) as u32));
            overflow.extend_from_slice(&data);
            if overflow.len() % 2 == 1 {
                overflow.push(0);
            }
        }
    }
    out.extend_from_slice(&u32b(0)); // no next IFD
    out.extend_from_slice(&overflow);
    out
}

/// Baseline tags of an uncompressed-layout grey strip image; `compression` as given.
fn grey_tiff_tags(width: u32, height: u32, compression: u16) -> Vec<(u16, TiffValue)> {
    use TiffValue::{Long, Short};
    vec![
        (256, Long(vec![width])),
        (257, Long(vec![height])),
        (258, Short(vec![8])),
        (259, Short(vec![compression])),
        (262, Short(vec![1])), // BlackIsZero
        (273, Long(vec![8])),
        (277, Short(vec![1])),
        (278, Long(vec![height])),
        (279, Long(vec![width * height])),
    ]
}

/// Big-endian ("MM", as old Macs and scanners wrote) uncompressed 8-bit grey.
fn tiff_grey_be(width: u32, height: u32, seed: u32) -> Vec<u8> {
    let pixels: Vec<u8> = (0..height).flat_map(|y| (0..width).map(move |x| grey_at(x, y, seed))).collect();
    tiff_file(true, &pixels, grey_tiff_tags(width, height, 1))
}

/// 8 x 8 grey whose strip claims JPEG 2000 compression (34712), which the decoder lacks.
fn tiff_unknown_compression(seed: u32) -> Vec<u8> {
    let pixels: Vec<u8> = (0..64u32).map(|i| grey_at(i % 8, i / 8, seed)).collect();
    tiff_file(false, &pixels, grey_tiff_tags(8, 8, 34_712))
}

/// Header of an RGBA, 32-bit float a sample, single-strip TIFF; only 64 bytes of the strip exist.
fn tiff_rgba_f32_header(width: u32, height: u32) -> Vec<u8> {
    use TiffValue::{Long, Short};
    let strip = u64::from(width) * u64::from(height) * 16;
    let strip = u32::try_from(strip).expect("the strip size fits a TIFF LONG");
    let entries = vec![
        (256, Long(vec![width])),
        (257, Long(vec![height])),
        (258, Short(vec![32; 4])),
        (259, Short(vec![1])),
        (262, Short(vec![2])), // RGB
        (273, Long(vec![8])),
        (277, Short(vec![4])),
        (278, Long(vec![height])),
        (279, Long(vec![strip])),
        (284, Short(vec![1])),    // chunky
        (338, Short(vec![2])),    // the fourth sample is unassociated alpha
        (339, Short(vec![3; 4])), // IEEE floating point
    ];
    tiff_file(false, &[0x3F; 64], entries)
}
