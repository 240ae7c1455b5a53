//! Image bytes to the image tower's input tensor, the way open_clip prepares images:
//! decode (EXIF orientation applied), RGB, resize the shortest side with the model's interpolation,
//! center-crop, scale to [0, 1], normalize with the model's mean and std, CHW float32.
//!
//! The geometry follows torchvision exactly (`int()` for the long side, Python's round-half-even for
//! the crop offset), and bicubic is the Catmull-Rom convolution Pillow uses, so the tensor matches the
//! reference within a rounding step (checked against PIL in `tests/reference.rs`).
//!
//! Large JPEGs can take a fast path: decode at 1/2, 1/4 or 1/8 size in the DCT domain, then resize
//! the small image. Its drift from the reference is measured in the tests and the bench.
//!
//! Every file is held to [`Limits`] before it is decoded, and every decode runs guarded (see
//! `guard`): a hostile file is an `ImageError` with its reason, never a crash, a hang or an
//! unbounded allocation. A JPEG is decoded up to its end-of-image marker; data appended after it
//! (a phone's motion-photo video, a second picture) is ignored.
//!
//! Nothing here touches ONNX Runtime or any store: it is pure CPU work, safe to run on any thread.

use std::{io::Cursor, path::Path, time::Instant};

use fast_image_resize::{
    FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer,
    images::{Image as FrImage, ImageRef},
};
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, RgbImage, metadata::Orientation};
use serde::Serialize;

use crate::{
    error::ImageError,
    guard::{self, Limits},
    model::{Interpolation, PreprocessConfig, ResizeMode},
};

/// What was learned about an image while preparing it; recorded as evidence.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ImageInfo {
    /// Displayed size, after EXIF orientation.
    pub width: u32,
    pub height: u32,
    pub format: &'static str,
    /// The colour layout in the file, e.g. `rgb8`, `la16`, `cmyk`.
    pub color: String,
    /// EXIF orientation 1-8 (1 when absent).
    pub orientation: u8,
    /// 1 for a full decode, 2/4/8 when the JPEG fast path decoded at reduced size.
    pub decode_scale: u8,
    pub decode_ms: f64,
    pub resize_ms: f64,
}

/// One image ready for the model: `3 * H * W` floats, channel-major.
#[derive(Clone)]
pub struct PreparedImage {
    pub pixels: Vec<f32>,
    pub info: ImageInfo,
}

impl std::fmt::Debug for PreparedImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedImage").field("pixels", &format_args!("[{} floats]", self.pixels.len())).field("info", &self.info).finish()
    }
}

/// Turns image bytes into model input for one preprocessing config.
#[derive(Debug, Clone)]
pub struct Preprocessor {
    cfg: PreprocessConfig,
    lut: [[f32; 256]; 3],
    fast_jpeg: bool,
    limits: Limits,
}

/// How small a decode may be: JPEGs decode at 1/2-1/8 size in the DCT domain when allowed and the
/// result still covers what is needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scale {
    Full,
    /// The shortest side stays at least this long (model input: the fast path).
    Shortest(u32),
    /// The longest side stays at least this long (thumbnails).
    Longest(u32),
}

impl Preprocessor {
    pub fn new(cfg: PreprocessConfig) -> Self {
        let mut lut = [[0f32; 256]; 3];
        for (c, table) in lut.iter_mut().enumerate() {
            for (v, out) in table.iter_mut().enumerate() {
                // the same float32 steps as torchvision's ToTensor then Normalize
                *out = (v as f32 / 255.0 - cfg.mean[c]) / cfg.std[c];
            }
        }
        Preprocessor { cfg, lut, fast_jpeg: false, limits: Limits::default() }
    }

    /// Decode large JPEGs at reduced size in the DCT domain (faster, drifts slightly from the reference).
    pub fn with_fast_jpeg(mut self, enabled: bool) -> Self {
        self.fast_jpeg = enabled;
        self
    }

    pub fn with_max_pixels(mut self, max_pixels: u64) -> Self {
        self.limits.max_pixels = max_pixels;
        self
    }

    pub fn config(&self) -> &PreprocessConfig {
        &self.cfg
    }

    /// The limits every file read through this preprocessor is held to.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// (height, width) of the output.
    pub fn output_hw(&self) -> (u32, u32) {
        self.cfg.size.hw()
    }

    /// Number of floats one prepared image holds.
    pub fn tensor_len(&self) -> usize {
        let (h, w) = self.output_hw();
        3 * h as usize * w as usize
    }

    /// Reads (a regular file only, within the size limit) and prepares one image, guarded.
    pub fn prepare_file(&self, path: &Path) -> Result<PreparedImage, ImageError> {
        let this = self.clone();
        guard::read_and_decode(path, self.limits, move |bytes| this.prepare_unguarded(&bytes))
    }

    /// Prepares image bytes (an upload), guarded.
    pub fn prepare(&self, bytes: &[u8]) -> Result<PreparedImage, ImageError> {
        if bytes.len() as u64 > self.limits.max_file_bytes {
            return Err(ImageError::FileTooLarge { size: bytes.len() as u64, limit: self.limits.max_file_bytes });
        }
        let (this, bytes) = (self.clone(), bytes.to_vec());
        guard::run_guarded(self.limits.decode_timeout, move || this.prepare_unguarded(&bytes))
    }

    /// Decodes a file for display (thumbnails): RGB, EXIF orientation applied, JPEGs at the smallest
    /// DCT scale whose longer side still has `longest` pixels. Same limits and guard as `prepare`.
    pub fn decode_file_for_display(&self, path: &Path, longest: u32) -> Result<RgbImage, ImageError> {
        let this = self.clone();
        guard::read_and_decode(path, self.limits, move |bytes| Ok(this.decode(&bytes, Scale::Longest(longest))?.rgb))
    }

    fn prepare_unguarded(&self, bytes: &[u8]) -> Result<PreparedImage, ImageError> {
        let started = Instant::now();
        let scale = if self.fast_jpeg { Scale::Shortest(self.output_hw().0.max(self.output_hw().1)) } else { Scale::Full };
        let decoded = self.decode(bytes, scale)?;
        let decode_ms = ms_since(started);
        let started = Instant::now();
        let pixels = self.resize_crop_normalize(&decoded.rgb)?;
        let (width, height) = decoded.displayed;
        Ok(PreparedImage {
            pixels,
            info: ImageInfo {
                width,
                height,
                format: decoded.format,
                color: decoded.color,
                orientation: decoded.orientation,
                decode_scale: decoded.scale,
                decode_ms,
                resize_ms: ms_since(started),
            },
        })
    }

    /// Any supported image to RGB, limits checked on the header before the pixels are decoded.
    fn decode(&self, bytes: &[u8], scale: Scale) -> Result<Decoded, ImageError> {
        if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
            // only the JPEG itself: zune-jpeg would fill a truncated scan with grey (such a file must
            // fail, not be indexed), and what follows the end-of-image marker is not part of it
            let extent = jpeg_extent(bytes).ok_or_else(|| ImageError::Decode("jpeg ends before its end-of-image marker (truncated file)".into()))?;
            let (w, h) = extent.frame.ok_or_else(|| ImageError::Decode("jpeg has no frame header".into()))?;
            self.limits.check_dimensions(w, h)?;
            if extent.scans > self.limits.max_jpeg_scans {
                return Err(ImageError::TooManyScans { scans: extent.scans, limit: self.limits.max_jpeg_scans });
            }
            let jpeg = &bytes[..extent.end];
            return match self.jpeg_decode(jpeg, scale) {
                Some(d) => d,
                None => self.full_decode(jpeg),
            };
        }
        self.full_decode(bytes)
    }

    fn full_decode(&self, bytes: &[u8]) -> Result<Decoded, ImageError> {
        let mut reader = ImageReader::new(Cursor::new(bytes)).with_guessed_format().map_err(|e| ImageError::Decode(e.to_string()))?;
        let format = reader.format().ok_or(ImageError::UnsupportedFormat)?;
        // the dimensions are checked below, with our reasons; the decoder keeps to the memory budget
        let mut limits = image::Limits::default();
        limits.max_alloc = Some(self.limits.max_decode_bytes);
        reader.limits(limits);
        let mut decoder = reader.into_decoder().map_err(decode_error)?;
        let (w, h) = decoder.dimensions();
        self.limits.check_dimensions(w, h)?;
        // the decoded buffer plus its RGB copy
        let rgb_bytes = u64::from(w) * u64::from(h) * 3;
        self.limits.check_decode_bytes(decoder.total_bytes().saturating_add(rgb_bytes))?;
        let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
        let color = format!("{:?}", decoder.original_color_type()).to_lowercase();
        let mut img = DynamicImage::from_decoder(decoder).map_err(decode_error)?;
        img.apply_orientation(orientation);
        let rgb = img.into_rgb8();
        Ok(Decoded { displayed: rgb.dimensions(), rgb, format: format_name(format), color, orientation: orientation_number(orientation), scale: 1 })
    }

    /// JPEGs decode with libjpeg-turbo, the library PIL uses, with PIL's settings (accurate integer
    /// IDCT, "fancy" chroma upsampling), so the pixels equal the reference's. With the fast path on,
    /// large ones decode at 1/2, 1/4 or 1/8 size in the DCT domain, never below the model's size.
    /// `None` means "take the generic decoder": not a JPEG, or CMYK/YCCK, which libjpeg-turbo cannot
    /// turn into RGB. A JPEG libjpeg-turbo rejects is an error here, never passed on.
    fn jpeg_decode(&self, bytes: &[u8], scale: Scale) -> Option<Result<Decoded, ImageError>> {
        let mut dec = match turbojpeg::Decompressor::new() {
            Ok(d) => d,
            Err(e) => return Some(Err(ImageError::Decode(e.to_string()))),
        };
        let header = match dec.read_header(bytes) {
            Ok(h) => h,
            Err(e) => return Some(Err(ImageError::Decode(e.to_string()))),
        };
        if matches!(header.colorspace, turbojpeg::Colorspace::CMYK | turbojpeg::Colorspace::YCCK) {
            return None;
        }
        Some(self.turbo_decode(&mut dec, bytes, header.width as u32, header.height as u32, header.colorspace, scale))
    }

    fn turbo_decode(&self, dec: &mut turbojpeg::Decompressor, bytes: &[u8], w: u32, h: u32, colorspace: turbojpeg::Colorspace, wanted: Scale) -> Result<Decoded, ImageError> {
        // the dimensions were checked on the frame header (`decode`); the RGB buffer is what it costs
        self.limits.check_decode_bytes(u64::from(w) * u64::from(h) * 3)?;
        let covered = |denom: u32| match wanted {
            Scale::Full => false,
            Scale::Shortest(target) => w.div_ceil(denom).min(h.div_ceil(denom)) >= target,
            Scale::Longest(target) => w.div_ceil(denom).max(h.div_ceil(denom)) >= target,
        };
        let scale = [8u32, 4, 2].into_iter().find(|&d| covered(d)).unwrap_or(1);
        let (sw, sh) = (w.div_ceil(scale), h.div_ceil(scale));
        let mut rgb = RgbImage::new(sw, sh);
        let out = turbojpeg::Image { pixels: rgb.as_mut(), width: sw as usize, pitch: 3 * sw as usize, height: sh as usize, format: turbojpeg::PixelFormat::RGB };
        // libjpeg-turbo reports a truncated scan as an error ("premature end of JPEG file")
        dec.decompress(bytes, out).map_err(|e| ImageError::Decode(e.to_string()))?;
        let orientation = jpeg_exif(bytes).and_then(Orientation::from_exif_chunk).unwrap_or(Orientation::NoTransforms);
        let mut img = DynamicImage::ImageRgb8(rgb);
        img.apply_orientation(orientation);
        let displayed = if swaps_axes(orientation) { (h, w) } else { (w, h) };
        Ok(Decoded {
            rgb: img.into_rgb8(),
            displayed,
            format: "jpeg",
            color: if colorspace == turbojpeg::Colorspace::Gray { "l8".into() } else { "rgb8".into() },
            orientation: orientation_number(orientation),
            scale: scale as u8,
        })
    }

    fn resize_crop_normalize(&self, rgb: &RgbImage) -> Result<Vec<f32>, ImageError> {
        let (th, tw) = self.output_hw();
        let (w, h) = rgb.dimensions();
        let (rw, rh) = match self.cfg.resize_mode {
            ResizeMode::Squash => (tw, th),
            ResizeMode::Shortest => shortest_side_size(w, h, th, tw),
        };
        let alg = match self.cfg.interpolation {
            Interpolation::Bicubic => ResizeAlg::Convolution(FilterType::CatmullRom),
            Interpolation::Bilinear => ResizeAlg::Convolution(FilterType::Bilinear),
            Interpolation::Nearest => ResizeAlg::Nearest,
        };
        // Two single-direction passes, horizontal first, each rounded and clipped to u8: the order
        // Pillow uses. fast_image_resize alone runs the vertical pass first for u8 images, and
        // clipping the bicubic overshoot in the other order moves edge pixels by several steps.
        let mut buf = std::borrow::Cow::Borrowed(rgb.as_raw().as_slice());
        let mut cur = (w, h);
        for next in [(rw, h), (rw, rh)] {
            if next != cur {
                buf = std::borrow::Cow::Owned(resize_u8x3(&buf, cur, next, alg)?);
                cur = next;
            }
        }
        let resized_buf: &[u8] = &buf;
        let top = center_offset(rh, th) as usize;
        let left = center_offset(rw, tw) as usize;
        let (th, tw, rw) = (th as usize, tw as usize, rw as usize);
        let plane = th * tw;
        let mut out = vec![0f32; 3 * plane];
        for y in 0..th {
            let row = &resized_buf[((top + y) * rw + left) * 3..][..tw * 3];
            for (x, px) in row.chunks_exact(3).enumerate() {
                for c in 0..3 {
                    out[c * plane + y * tw + x] = self.lut[c][px[c] as usize];
                }
            }
        }
        Ok(out)
    }
}

fn resize_u8x3(src: &[u8], (w, h): (u32, u32), (dw, dh): (u32, u32), alg: ResizeAlg) -> Result<Vec<u8>, ImageError> {
    let src = ImageRef::new(w, h, src, PixelType::U8x3).map_err(|e| ImageError::Decode(e.to_string()))?;
    let mut dst = FrImage::new(dw, dh, PixelType::U8x3);
    Resizer::new().resize(&src, &mut dst, &ResizeOptions::new().resize_alg(alg)).map_err(|e| ImageError::Decode(e.to_string()))?;
    Ok(dst.into_vec())
}

struct Decoded {
    rgb: RgbImage,
    displayed: (u32, u32),
    format: &'static str,
    color: String,
    orientation: u8,
    scale: u8,
}

/// The EXIF payload (from the TIFF header on) of a JPEG's APP1 segment, if any.
fn jpeg_exif(bytes: &[u8]) -> Option<&[u8]> {
    let mut pos = 2;
    while pos + 4 <= bytes.len() && bytes[pos] == 0xFF {
        let marker = bytes[pos + 1];
        if marker == 0xDA || marker == 0xD9 {
            return None; // start of scan: no more metadata segments
        }
        let len = u16::from_be_bytes([bytes[pos + 2], bytes[pos + 3]]) as usize;
        let payload = bytes.get(pos + 4..pos + 2 + len)?;
        if marker == 0xE1 && payload.starts_with(b"Exif\0\0") {
            return Some(&payload[6..]);
        }
        pos += 2 + len;
    }
    None
}

fn swaps_axes(o: Orientation) -> bool {
    matches!(o, Orientation::Rotate90 | Orientation::Rotate270 | Orientation::Rotate90FlipH | Orientation::Rotate270FlipH)
}

/// What walking a JPEG's segments tells before any pixel is decoded.
#[derive(Debug, PartialEq, Eq)]
struct JpegExtent {
    /// Just past the end-of-image marker: what follows (a motion photo's video) is not the JPEG.
    end: usize,
    scans: usize,
    /// (width, height) from the first frame header.
    frame: Option<(u32, u32)>,
}

/// Walks a JPEG's segments: each marker segment is skipped by its length (so a thumbnail inside
/// EXIF does not count), and after a start-of-scan the entropy-coded data runs to the next marker
/// that is neither a stuffed `FF 00` nor a restart marker. `None` when the data ends first (a
/// truncated file).
fn jpeg_extent(bytes: &[u8]) -> Option<JpegExtent> {
    let mut pos = 2; // after SOI
    let mut scans = 0;
    let mut frame = None;
    loop {
        if *bytes.get(pos)? != 0xFF {
            return None;
        }
        while *bytes.get(pos)? == 0xFF {
            pos += 1; // fill bytes
        }
        let marker = bytes[pos];
        pos += 1;
        match marker {
            0xD9 => return Some(JpegExtent { end: pos, scans, frame }),
            0x01 | 0xD0..=0xD7 => continue, // standalone markers
            _ => {}
        }
        let len = u16::from_be_bytes([*bytes.get(pos)?, *bytes.get(pos + 1)?]) as usize;
        if len < 2 {
            return None;
        }
        // start of frame (not DHT C4, JPG C8, DAC CC): precision, height, width
        if matches!(marker, 0xC0..=0xCF) && !matches!(marker, 0xC4 | 0xC8 | 0xCC) && frame.is_none() && len >= 7 {
            let at = |i: usize| bytes.get(pos + i).copied().map(u32::from);
            frame = Some(((at(5)? << 8) | at(6)?, (at(3)? << 8) | at(4)?));
        }
        pos += len;
        if pos > bytes.len() {
            return None;
        }
        if marker == 0xDA {
            scans += 1;
            loop {
                pos += bytes.get(pos..)?.iter().position(|&b| b == 0xFF)?;
                match *bytes.get(pos + 1)? {
                    0x00 | 0xD0..=0xD7 => pos += 2,
                    0xFF => pos += 1,
                    _ => break,
                }
            }
        }
    }
}

/// torchvision's `Resize(size)` for one int: the shortest side becomes `size`, the other
/// `int(size * long / short)`. For a non-square target, the smallest scale that covers it.
fn shortest_side_size(w: u32, h: u32, th: u32, tw: u32) -> (u32, u32) {
    if th == tw {
        let size = th as u64;
        if w <= h { (th, (size * h as u64 / w as u64) as u32) } else { ((size * w as u64 / h as u64) as u32, th) }
    } else {
        let scale = (th as f64 / h as f64).max(tw as f64 / w as f64);
        (((w as f64 * scale).round() as u32).max(tw), ((h as f64 * scale).round() as u32).max(th))
    }
}

/// torchvision's center-crop offset: `int(round((len - crop) / 2.0))`, Python rounding half to even.
fn center_offset(len: u32, crop: u32) -> u32 {
    let diff = len.saturating_sub(crop);
    let half = diff / 2;
    if diff % 2 == 1 && half % 2 == 1 { half + 1 } else { half }
}

fn decode_error(e: image::ImageError) -> ImageError {
    match e {
        image::ImageError::Unsupported(_) => ImageError::UnsupportedFormat,
        image::ImageError::Limits(l) => ImageError::DecoderLimit(l.to_string()),
        other => ImageError::Decode(other.to_string()),
    }
}

fn format_name(format: ImageFormat) -> &'static str {
    match format {
        ImageFormat::Jpeg => "jpeg",
        ImageFormat::Png => "png",
        ImageFormat::WebP => "webp",
        ImageFormat::Gif => "gif",
        ImageFormat::Bmp => "bmp",
        ImageFormat::Tiff => "tiff",
        _ => "other",
    }
}

fn orientation_number(o: Orientation) -> u8 {
    match o {
        Orientation::NoTransforms => 1,
        Orientation::FlipHorizontal => 2,
        Orientation::Rotate180 => 3,
        Orientation::FlipVertical => 4,
        Orientation::Rotate90FlipH => 5,
        Orientation::Rotate90 => 6,
        Orientation::Rotate270FlipH => 7,
        Orientation::Rotate270 => 8,
    }
}

fn ms_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crop_offsets_round_half_to_even_like_python() {
        let check = |len, crop, expected| assert_eq!(center_offset(len, crop), expected, "center_offset({len}, {crop})");
        check(224, 224, 0);
        check(225, 224, 0); // round(0.5) == 0
        check(226, 224, 1);
        check(227, 224, 2); // round(1.5) == 2
        check(229, 224, 2); // round(2.5) == 2
        check(231, 224, 4); // round(3.5) == 4
    }

    #[test]
    fn shortest_side_truncates_the_long_side_like_torchvision() {
        let check = |w, h, expected| assert_eq!(shortest_side_size(w, h, 224, 224), expected, "({w}x{h})");
        check(640, 480, (298, 224)); // int(224 * 640 / 480) = int(298.67)
        check(480, 640, (224, 298));
        check(451, 300, (336, 224)); // int(336.75)
        check(100, 100, (224, 224));
        check(3000, 10, (67200, 224));
    }

    fn encode(img: &DynamicImage, format: ImageFormat) -> Vec<u8> {
        let mut buf = Cursor::new(Vec::new());
        img.write_to(&mut buf, format).unwrap();
        buf.into_inner()
    }

    #[test]
    fn refuses_what_is_not_an_image() {
        let p = Preprocessor::new(PreprocessConfig::openclip_vit_b32());
        assert!(matches!(p.prepare(b"hello, this is text"), Err(ImageError::UnsupportedFormat)));
        let jpeg = encode(&DynamicImage::new_rgb8(300, 200), ImageFormat::Jpeg);
        let err = p.prepare(&jpeg[..jpeg.len() / 3]).unwrap_err();
        assert_eq!(err.reason(), "corrupt", "{err}");
    }

    #[test]
    fn a_jpeg_ends_at_its_end_of_image_marker() {
        let jpeg = encode(&DynamicImage::new_rgb8(300, 200), ImageFormat::Jpeg);
        assert_eq!(jpeg_extent(&jpeg), Some(JpegExtent { end: jpeg.len(), scans: 1, frame: Some((300, 200)) }));
        // a motion photo: the video after the JPEG holds bytes that look like markers
        let mut motion = jpeg.clone();
        motion.extend_from_slice(b"\0\0\0\x18ftypmp42\xFF\xDA\x00\x08\xFF\xD8\xFF\xE0junk");
        assert_eq!(jpeg_extent(&motion), Some(JpegExtent { end: jpeg.len(), scans: 1, frame: Some((300, 200)) }));
        assert_eq!(jpeg_extent(&jpeg[..jpeg.len() - 2]), None, "no end-of-image marker");
        assert_eq!(jpeg_extent(&jpeg[..jpeg.len() / 2]), None);
        let p = Preprocessor::new(PreprocessConfig::openclip_vit_b32());
        assert_eq!(p.prepare(&motion).unwrap().pixels, p.prepare(&jpeg).unwrap().pixels);
    }

    #[test]
    fn a_strip_is_refused_before_its_resize_is_allocated() {
        let p = Preprocessor::new(PreprocessConfig::openclip_vit_b32());
        let png = encode(&DynamicImage::new_rgb8(5000, 10), ImageFormat::Png);
        let err = p.prepare(&png).unwrap_err();
        assert_eq!((err.reason(), err.to_string()), ("extreme_aspect", "image of 5000x10 is more than 100 times longer than it is wide; such strips are not indexed".to_owned()));
    }

    #[test]
    fn refuses_too_many_pixels_before_decoding() {
        let p = Preprocessor::new(PreprocessConfig::openclip_vit_b32()).with_max_pixels(10_000);
        let png = encode(&DynamicImage::new_rgb8(200, 100), ImageFormat::Png);
        let err = p.prepare(&png).unwrap_err();
        assert_eq!(err.to_string(), "image of 200x100 has more than 10000 pixels; raise the pixel limit to accept it");
    }

    #[test]
    fn output_is_normalized_chw() {
        let p = Preprocessor::new(PreprocessConfig::openclip_vit_b32());
        let img = DynamicImage::ImageRgb8(RgbImage::from_pixel(300, 250, image::Rgb([255, 0, 128])));
        let out = p.prepare(&encode(&img, ImageFormat::Png)).unwrap();
        assert_eq!(out.pixels.len(), 3 * 224 * 224);
        let plane = 224 * 224;
        let expect = |c: usize, v: f32| (v / 255.0 - p.cfg.mean[c]) / p.cfg.std[c];
        assert!((out.pixels[0] - expect(0, 255.0)).abs() < 1e-6);
        assert!((out.pixels[plane + 500] - expect(1, 0.0)).abs() < 1e-6);
        assert!((out.pixels[2 * plane + 999] - expect(2, 128.0)).abs() < 1e-6);
        assert_eq!((out.info.width, out.info.height, out.info.format), (300, 250, "png"));
    }
}
