//! Text to token ids for the text tower: the model's `tokenizer.json` through the `tokenizers` crate,
//! with context length, padding and truncation taken from the model's config.
//!
//! CLIP was trained on text cleaned by ftfy and `html.unescape`; the Hugging Face tokenizer file that
//! Immich ships does neither. [`clean_text`] applies the parts of that cleaning that change ids for
//! text people type (HTML entities, curly quotes, ligatures, full-width letters), so that the ids match
//! open_clip's reference tokenizer. Literal special tokens in user text (`<|endoftext|>`) are encoded
//! as text, never as control tokens.

use std::{borrow::Cow, path::Path};

use ndarray::Array2;
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};
use unicode_normalization::UnicodeNormalization;

use crate::error::{ClipError, ModelError};

/// A tokenizer bound to one model's context length and pad token.
pub struct TextTokenizer {
    inner: Tokenizer,
    context_length: usize,
}

impl TextTokenizer {
    pub fn from_file(path: &Path, context_length: usize, pad_token: &str) -> Result<Self, ModelError> {
        let malformed = |reason: String| ModelError::Malformed { path: path.to_owned(), reason };
        let mut inner = Tokenizer::from_file(path).map_err(|e| malformed(e.to_string()))?;
        let pad_id = inner.token_to_id(pad_token).ok_or_else(|| malformed(format!("pad token {pad_token:?} is not in the vocabulary")))?;
        inner.with_truncation(Some(TruncationParams { max_length: context_length, ..Default::default() })).map_err(|e| malformed(e.to_string()))?;
        inner.with_padding(Some(PaddingParams { strategy: PaddingStrategy::Fixed(context_length), pad_id, pad_token: pad_token.to_owned(), ..Default::default() }));
        inner.set_encode_special_tokens(true);
        Ok(TextTokenizer { inner, context_length })
    }

    pub fn context_length(&self) -> usize {
        self.context_length
    }

    /// Token ids of one text, `context_length` long: start, the text (truncated), end, padding.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, ClipError> {
        // Only the first `context_length` tokens are kept, and no token spans more than a few dozen
        // characters (even with entities decoded), so the text is cut first: tokenizing a 10 MB
        // query to keep 77 tokens took seconds and most of a gigabyte.
        let text = cut_at_char_boundary(text, self.context_length * MAX_CHARS_PER_TOKEN);
        let cleaned = clean_text(text);
        let encoding = self.inner.encode(cleaned.as_ref(), true).map_err(|e| ClipError::Tokenize { text: text.to_owned(), reason: e.to_string() })?;
        Ok(encoding.get_ids().to_vec())
    }

    /// A `[n, context_length]` batch in the i32 the text towers take.
    pub fn encode_batch(&self, texts: &[&str]) -> Result<Array2<i32>, ClipError> {
        let mut batch = Array2::<i32>::zeros((texts.len(), self.context_length));
        for (row, text) in texts.iter().enumerate() {
            for (col, id) in self.encode(text)?.into_iter().enumerate() {
                batch[[row, col]] = id as i32;
            }
        }
        Ok(batch)
    }
}

/// More characters than any token of the text takes, HTML entities included: cutting a text at
/// `context_length` times this keeps every token that tokenizing it whole would keep.
const MAX_CHARS_PER_TOKEN: usize = 256;

/// `text`, at most `max` bytes, cut at a character boundary.
fn cut_at_char_boundary(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// The text cleaning CLIP was trained with, as far as it changes ids of typed text: HTML entities
/// decoded (twice, as open_clip does), curly quotes made straight, ligatures and full-width forms
/// folded (ftfy's defaults), whitespace collapsed. Lowercasing and NFC are in the tokenizer file.
pub fn clean_text(text: &str) -> Cow<'_, str> {
    let needs_work = text.chars().any(|c| c == '&' || !c.is_ascii() || (c.is_whitespace() && c != ' '));
    if !needs_work {
        return Cow::Borrowed(text);
    }
    let once = html_escape::decode_html_entities(text);
    let twice = html_escape::decode_html_entities(&once);
    let mut out = String::with_capacity(twice.len());
    for c in twice.chars() {
        match c {
            '\u{2018}' | '\u{2019}' | '\u{201A}' | '\u{201B}' => out.push('\''),
            '\u{201C}' | '\u{201D}' | '\u{201E}' | '\u{201F}' => out.push('"'),
            // full-width ASCII variants and Latin ligatures: compatibility decomposition
            '\u{FF01}'..='\u{FF5E}' | '\u{FB00}'..='\u{FB06}' => out.extend(std::iter::once(c).nfkc()),
            _ => out.push(c),
        }
    }
    Cow::Owned(out.split_whitespace().collect::<Vec<_>>().join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected: &str) {
        assert_eq!(clean_text(input), expected, "clean_text({input:?})");
    }

    #[test]
    fn a_text_is_cut_at_a_character_boundary() {
        assert_eq!(cut_at_char_boundary("abc", 10), "abc");
        assert_eq!(cut_at_char_boundary("abcdef", 3), "abc");
        assert_eq!(cut_at_char_boundary("aé", 2), "a", "é is two bytes: not split");
    }

    #[test]
    fn cleans_like_ftfy_for_typed_text() {
        check("a red circle", "a red circle");
        check("fish &amp; chips", "fish & chips");
        check("&amp;lt;", "<");
        check("\u{201C}quoted\u{201D} it\u{2019}s", "\"quoted\" it's");
        check("\u{FB01}ne", "fine");
        check("\u{FF41}\u{FF42}\u{FF43}", "abc");
        check("  a\t\tb \n c ", "a b c");
        check("café", "café");
    }
}
