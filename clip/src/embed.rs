//! Both towers of a CLIP model behind one type: images and texts in, L2-normalized vectors out, with
//! the device that ran them.
//!
//! Immich exports its models with a fixed batch of 1; models with a dynamic batch dimension run a whole
//! batch in one call. Either way the caller passes any number of inputs.

use std::sync::Mutex;

use ndarray::{Array2, Array4, ArrayView2, ArrayView4, Axis, s};
use ort::value::TensorRef;
use sha2::{Digest, Sha256};

use crate::{
    error::{ClipError, runtime},
    model::{ModelDir, TEXTUAL_MODEL, TOKENIZER, VISUAL_MODEL},
    preprocess::{PreparedImage, Preprocessor},
    runtime::{DeviceSession, RuntimeOptions, open_session},
    text::TextTokenizer,
};

struct Tower {
    session: Mutex<DeviceSession>,
    input: String,
    /// `Some(n)` when the model was exported with a fixed batch size.
    fixed_batch: Option<usize>,
}

impl Tower {
    fn open(dir: &ModelDir, file: &str, options: &RuntimeOptions) -> Result<Self, ClipError> {
        let session = open_session(&dir.path(file), options)?;
        let input = session.session.inputs().first().ok_or_else(|| ClipError::Runtime { action: "read the model inputs", reason: format!("{file} has no input") })?;
        let fixed_batch = input.dtype().tensor_shape().and_then(|shape| shape.first().copied()).filter(|d| *d > 0).map(|d| d as usize);
        Ok(Tower { input: input.name().to_owned(), fixed_batch, session: Mutex::new(session) })
    }

    fn device(&self) -> String {
        self.session.lock().expect("session lock").device.clone()
    }

    /// Runs the tower over `n` rows, in chunks the model accepts, and checks the output shape.
    fn run<T, F>(&self, n: usize, embed_dim: usize, mut input_rows: F) -> Result<Array2<f32>, ClipError>
    where
        F: FnMut(usize, usize) -> Result<T, ClipError>,
        T: RunInput,
    {
        let chunk = self.fixed_batch.unwrap_or(n.max(1));
        let mut out = Array2::<f32>::zeros((n, embed_dim));
        let mut guard = self.session.lock().expect("session lock");
        let mut start = 0;
        while start < n {
            let end = (start + chunk).min(n);
            let input = input_rows(start, end)?;
            let outputs = input.run(&mut guard.session, &self.input)?;
            let emb = outputs[0].try_extract_array::<f32>().map_err(runtime("read the output"))?;
            let shape = emb.shape().to_vec();
            if shape.len() != 2 || shape[0] != end - start || shape[1] != embed_dim {
                return Err(ClipError::OutputShape { shape, expected_dim: embed_dim });
            }
            out.slice_mut(s![start..end, ..]).assign(&emb.into_dimensionality::<ndarray::Ix2>().expect("checked rank"));
            start = end;
        }
        Ok(out)
    }
}

/// Something a tower can take as its single input.
trait RunInput {
    fn run<'s>(&self, session: &'s mut ort::session::Session, name: &str) -> Result<ort::session::SessionOutputs<'s>, ClipError>;
}

impl RunInput for Array4<f32> {
    fn run<'s>(&self, session: &'s mut ort::session::Session, name: &str) -> Result<ort::session::SessionOutputs<'s>, ClipError> {
        let tensor = TensorRef::from_array_view(self.view()).map_err(runtime("take the image batch"))?;
        session.run(ort::inputs![name => tensor]).map_err(runtime("run the image tower"))
    }
}

impl RunInput for Array2<i32> {
    fn run<'s>(&self, session: &'s mut ort::session::Session, name: &str) -> Result<ort::session::SessionOutputs<'s>, ClipError> {
        let tensor = TensorRef::from_array_view(self.view()).map_err(runtime("take the token batch"))?;
        session.run(ort::inputs![name => tensor]).map_err(runtime("run the text tower"))
    }
}

/// Which towers a process loads. A text search needs the text tower (and the tokenizer), an indexer
/// or an embedder worker only the image tower; loading the other costs start-up time and memory
/// (ViT-B-32's text tower is ~250 MB) for nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Towers {
    Both,
    Image,
    Text,
}

impl Towers {
    fn image(self) -> bool {
        self != Towers::Text
    }

    fn text(self) -> bool {
        self != Towers::Image
    }
}

/// A loaded CLIP model: the towers [`Towers`] asked for.
pub struct ClipModel {
    pub name: String,
    pub version: String,
    pub embed_dim: usize,
    visual: Option<Tower>,
    textual: Option<Tower>,
    tokenizer: Option<TextTokenizer>,
    preprocessor: Preprocessor,
}

impl ClipModel {
    /// Both towers.
    pub fn load(dir: &ModelDir, options: &RuntimeOptions) -> Result<Self, ClipError> {
        Self::load_towers(dir, options, Towers::Both)
    }

    /// The towers asked for. What loads (each tower's session, the tokenizer, the model's version,
    /// which hashes the model files) loads side by side, one thread each.
    pub fn load_towers(dir: &ModelDir, options: &RuntimeOptions, towers: Towers) -> Result<Self, ClipError> {
        fn join<T>(handle: std::thread::ScopedJoinHandle<'_, T>) -> T {
            handle.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        }
        let (version, tokenizer, textual, visual) = std::thread::scope(|s| {
            let version = s.spawn(|| dir.version());
            let tokenizer = towers.text().then(|| s.spawn(|| TextTokenizer::from_file(&dir.path(TOKENIZER), dir.config.text_cfg.context_length, &dir.pad_token)));
            let textual = towers.text().then(|| s.spawn(|| Tower::open(dir, TEXTUAL_MODEL, options)));
            let visual = towers.image().then(|| Tower::open(dir, VISUAL_MODEL, options));
            (join(version), tokenizer.map(join), textual.map(join), visual)
        });
        Ok(ClipModel {
            name: dir.name.clone(),
            version: version?,
            embed_dim: dir.config.embed_dim,
            visual: visual.transpose()?,
            textual: textual.transpose()?,
            tokenizer: tokenizer.transpose()?,
            preprocessor: Preprocessor::new(dir.preprocess.clone()),
        })
    }

    fn visual(&self) -> Result<&Tower, ClipError> {
        self.visual.as_ref().ok_or(ClipError::TowerNotLoaded { tower: "image" })
    }

    fn textual(&self) -> Result<(&Tower, &TextTokenizer), ClipError> {
        self.textual.as_ref().zip(self.tokenizer.as_ref()).ok_or(ClipError::TowerNotLoaded { tower: "text" })
    }

    /// The preprocessing this model expects (clone it into decode threads).
    pub fn preprocessor(&self) -> &Preprocessor {
        &self.preprocessor
    }

    pub fn tokenizer(&self) -> Option<&TextTokenizer> {
        self.tokenizer.as_ref()
    }

    /// The device the image tower runs on: `cpu` or `cuda:0` (`not loaded` without it).
    pub fn image_device(&self) -> String {
        self.visual.as_ref().map_or_else(|| "not loaded".into(), Tower::device)
    }

    pub fn text_device(&self) -> String {
        self.textual.as_ref().map_or_else(|| "not loaded".into(), Tower::device)
    }

    /// Embeds prepared images; row i belongs to `images[i]`.
    pub fn embed_images(&self, images: &[PreparedImage]) -> Result<Array2<f32>, ClipError> {
        let (h, w) = self.preprocessor.output_hw();
        let len = self.preprocessor.tensor_len();
        self.visual()?
            .run(images.len(), self.embed_dim, |start, end| {
                let mut batch = Array4::<f32>::zeros((end - start, 3, h as usize, w as usize));
                let flat = batch.as_slice_mut().expect("standard layout");
                for (i, img) in images[start..end].iter().enumerate() {
                    flat[i * len..(i + 1) * len].copy_from_slice(&img.pixels);
                }
                Ok(batch)
            })
            .map(l2_normalize)
    }

    /// Embeds a ready `[n, 3, H, W]` tensor (e.g. one read from an .npy file).
    pub fn embed_image_tensor(&self, batch: ArrayView4<f32>) -> Result<Array2<f32>, ClipError> {
        self.visual()?.run(batch.len_of(Axis(0)), self.embed_dim, |start, end| Ok(batch.slice(s![start..end, .., .., ..]).to_owned())).map(l2_normalize)
    }

    pub fn embed_texts(&self, texts: &[&str]) -> Result<Array2<f32>, ClipError> {
        let (textual, tokenizer) = self.textual()?;
        let tokens = tokenizer.encode_batch(texts)?;
        textual.run(texts.len(), self.embed_dim, |start, end| Ok(tokens.slice(s![start..end, ..]).to_owned())).map(l2_normalize)
    }
}

/// Unit length per row. The exported towers normalize already; doing it again costs nothing and
/// makes a model that does not still give cosine-ready vectors.
fn l2_normalize(mut m: Array2<f32>) -> Array2<f32> {
    for mut row in m.rows_mut() {
        let norm = row.dot(&row).sqrt();
        if norm > 0.0 {
            row /= norm;
        }
    }
    m
}

/// sha256 of the vector's little-endian f32 bytes: the checksum recorded as evidence.
pub fn embedding_checksum(vector: &[f32]) -> String {
    let mut hasher = Sha256::new();
    for v in vector {
        hasher.update(v.to_le_bytes());
    }
    hex::encode(hasher.finalize())
}

/// Cosine similarity of two vectors of the same length.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb)
}

/// Rows of a matrix as owned vectors.
pub fn rows(m: ArrayView2<f32>) -> Vec<Vec<f32>> {
    m.rows().into_iter().map(|r| r.to_vec()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_is_sha256_of_le_bytes() {
        // python3 -c "import hashlib,struct; print(hashlib.sha256(struct.pack('<2f',1.0,-0.5)).hexdigest())"
        assert_eq!(embedding_checksum(&[1.0, -0.5]), "e5e0ce39fac89cd93af5ba8bcad2fe35d88c75417c7e44941fe5ee4e48f1cf75");
    }

    #[test]
    fn normalizes_rows() {
        let m = l2_normalize(ndarray::arr2(&[[3.0, 4.0], [0.0, 0.0]]));
        assert_eq!(m, ndarray::arr2(&[[0.6, 0.8], [0.0, 0.0]]));
        assert!((cosine(&[1.0, 0.0], &[1.0, 1.0]) - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-6);
    }
}
