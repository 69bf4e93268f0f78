//! MinHash signatures and LSH band keys.
//!
//! A document is normalised ([`normalize`]: lowercase, every run of digits (with one decimal part)
//! → `0`, punctuation → space, whitespace runs → one space), split into words, and its word
//! n-grams ("shingles") are hashed with xxh3-64. Each of `bands × rows` permutations is
//! `h ↦ (a·h + b) mod 2^64` with `a` odd (a bijection of the 64-bit hashes; the high bits, which
//! decide the minimum, depend on every bit of `h`) and `a, b` drawn from a seeded ChaCha8 stream;
//! one multiply-add per shingle and permutation, against datatrove's `(a·h + b) mod (2^61 − 1)`.
//! The signature is the minimum of each permutation over the distinct shingles, and a band's key is the xxh3-128 hash of its
//! `rows` minima. Two documents of Jaccard similarity `s` share at least one band key with
//! probability `1 − (1 − s^rows)^bands` (the S-curve; its midpoint is about `(1/bands)^(1/rows)`).

use gradus_tensor::rng::Rng;
use twox_hash::{XxHash3_128, XxHash3_64};

#[derive(Clone, Debug, PartialEq)]
pub struct MinHashParams {
    /// Words per shingle.
    pub ngram: usize,
    pub bands: usize,
    pub rows: usize,
    pub seed: u64,
}

impl Default for MinHashParams {
    /// datatrove's defaults: 5-grams, 14 bands × 8 rows (S-curve midpoint ≈ 0.72).
    fn default() -> Self {
        MinHashParams {
            ngram: 5,
            bands: 14,
            rows: 8,
            seed: 1,
        }
    }
}

impl MinHashParams {
    pub fn validate(&self) -> gradus_tensor::Result<()> {
        use gradus_tensor::Error;
        if self.ngram == 0 {
            return Err(Error::config("ngram", "must be at least 1"));
        }
        if self.bands == 0 || self.rows == 0 {
            return Err(Error::config("bands", "bands and rows must be at least 1"));
        }
        if self.bands * self.rows > 4096 {
            return Err(Error::config("bands", "bands × rows must be at most 4096"));
        }
        Ok(())
    }

    /// Probability that two documents of Jaccard similarity `s` become LSH candidates.
    pub fn candidate_probability(&self, s: f64) -> f64 {
        1.0 - (1.0 - s.powi(self.rows as i32)).powi(self.bands as i32)
    }
}

/// Characters turned into spaces besides ASCII punctuation and control characters: common
/// typographic quotes, dashes, brackets and CJK punctuation.
fn is_extra_punct(c: char) -> bool {
    matches!(
        c,
        '“' | '”'
            | '„'
            | '‘'
            | '’'
            | '«'
            | '»'
            | '–'
            | '—'
            | '━'
            | '…'
            | '、'
            | '。'
            | '，'
            | '；'
            | '：'
            | '！'
            | '？'
            | '（'
            | '）'
            | '【'
            | '】'
            | '「'
            | '」'
            | '《'
            | '》'
            | '〈'
            | '〉'
            | '´'
            | '►'
            | '％'
            | '＄'
            | '～'
            | '．'
            | '∶'
    ) || ('\u{80}'..='\u{9f}').contains(&c)
}

fn is_digit(c: char) -> bool {
    c.is_ascii_digit() || (!c.is_ascii() && c.is_numeric())
}

/// The normalised text shingles are taken from (see the module doc). ASCII bytes take a fast path.
pub fn normalize(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut space = true; // at start: drop leading whitespace
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let ch = if c < 0x80 {
            c as char
        } else {
            text[i..].chars().next().unwrap_or(' ')
        };
        if is_digit(ch) {
            // A run of digits, optionally `[.,]digits` once, becomes one `0`.
            i = skip_digits(text, i);
            if matches!(bytes.get(i), Some(b'.' | b','))
                && text[i + 1..].chars().next().is_some_and(is_digit)
            {
                i = skip_digits(text, i + 1);
            }
            out.push('0');
            space = false;
            continue;
        }
        i += ch.len_utf8();
        if c < 0x80 {
            if c.is_ascii_alphabetic() {
                out.push(c.to_ascii_lowercase() as char);
                space = false;
            } else if !space {
                // ASCII that is not a letter or digit: whitespace, punctuation, control.
                out.push(' ');
                space = true;
            }
        } else if ch.is_whitespace() || ch.is_control() || is_extra_punct(ch) {
            if !space {
                out.push(' ');
                space = true;
            }
        } else {
            out.extend(ch.to_lowercase());
            space = false;
        }
    }
    if out.ends_with(' ') {
        out.pop();
    }
    out
}

fn skip_digits(text: &str, mut i: usize) -> usize {
    for ch in text[i..].chars() {
        if !is_digit(ch) {
            break;
        }
        i += ch.len_utf8();
    }
    i
}

/// The hashes of the word `n`-grams of `text` after [`normalize`], in order (repeats kept). A text
/// with fewer than `n` words has none (as in datatrove): MinHash leaves it alone (exact dedup
/// still sees it).
pub fn shingles(text: &str, n: usize) -> Vec<u64> {
    let norm = normalize(text);
    if norm.is_empty() {
        return Vec::new();
    }
    // Word start offsets; n-gram i is norm[starts[i] .. end of word i+n-1].
    let mut starts = vec![0usize];
    starts.extend(norm.match_indices(' ').map(|(i, _)| i + 1));
    let words = starts.len();
    let end_of = |w: usize| {
        if w + 1 < words {
            starts[w + 1] - 1
        } else {
            norm.len()
        }
    };
    if words < n {
        return Vec::new();
    }
    (0..=words - n)
        .map(|i| XxHash3_64::oneshot(&norm.as_bytes()[starts[i]..end_of(i + n - 1)]))
        .collect()
}

/// The sorted distinct shingles of `text`: the set whose Jaccard similarity MinHash estimates.
pub fn shingle_set(text: &str, n: usize) -> Vec<u64> {
    let mut s = shingles(text, n);
    s.sort_unstable();
    s.dedup();
    s
}

/// Exact Jaccard similarity of two sorted, distinct sets.
pub fn jaccard(a: &[u64], b: &[u64]) -> f64 {
    if a.is_empty() && b.is_empty() {
        return 1.0;
    }
    let (mut i, mut j, mut inter) = (0, 0, 0usize);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                inter += 1;
                i += 1;
                j += 1;
            }
        }
    }
    inter as f64 / (a.len() + b.len() - inter) as f64
}

/// The `bands × rows` permutations of one parameter set.
#[derive(Clone, Debug)]
pub struct MinHasher {
    pub params: MinHashParams,
    a: Vec<u64>,
    b: Vec<u64>,
}

impl MinHasher {
    pub fn new(params: MinHashParams) -> gradus_tensor::Result<Self> {
        params.validate()?;
        let k = params.bands * params.rows;
        let mut rng = Rng::derive(params.seed, "minhash-permutations");
        let a = (0..k).map(|_| rng.next_u64() | 1).collect();
        let b = (0..k).map(|_| rng.next_u64()).collect();
        Ok(MinHasher { params, a, b })
    }

    /// The minimum of each permutation over `shingles`; `None` for no shingles.
    pub fn signature(&self, shingles: &[u64]) -> Option<Vec<u64>> {
        if shingles.is_empty() {
            return None;
        }
        let k = self.a.len();
        let mut mins = vec![u64::MAX; k];
        // Repeated shingles cannot change a minimum: permute each distinct one once.
        let mut set = shingles.to_vec();
        set.sort_unstable();
        set.dedup();
        permute_min(&set, &self.a, &self.b, &mut mins);
        Some(mins)
    }

    /// One key per band: xxh3-128 of the band's `rows` minima (with the band index mixed in, so
    /// equal minima in different bands do not collide).
    pub fn band_keys(&self, sig: &[u64]) -> Vec<u128> {
        sig.chunks(self.params.rows)
            .enumerate()
            .map(|(band, mins)| {
                let mut bytes = Vec::with_capacity(8 * (mins.len() + 1));
                bytes.extend_from_slice(&(band as u64).to_le_bytes());
                for m in mins {
                    bytes.extend_from_slice(&m.to_le_bytes());
                }
                XxHash3_128::oneshot(&bytes)
            })
            .collect()
    }

    /// Band keys of a text (empty when it has no words).
    pub fn text_keys(&self, text: &str) -> Vec<u128> {
        match self.signature(&shingles(text, self.params.ngram)) {
            Some(sig) => self.band_keys(&sig),
            None => Vec::new(),
        }
    }
}

#[inline(always)]
fn permute_min_generic(set: &[u64], a: &[u64], b: &[u64], mins: &mut [u64]) {
    for &h in set {
        for ((m, &a), &b) in mins.iter_mut().zip(a).zip(b) {
            *m = (*m).min(a.wrapping_mul(h).wrapping_add(b));
        }
    }
}

/// The same loop compiled for AVX-512 (64-bit lane multiply `vpmullq`, unsigned min `vpminuq`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512dq")]
unsafe fn permute_min_avx512(set: &[u64], a: &[u64], b: &[u64], mins: &mut [u64]) {
    permute_min_generic(set, a, b, mins)
}

/// `mins[i] = min over h in set of a[i]·h + b[i] (mod 2^64)`, with AVX-512 when the CPU has it.
fn permute_min(set: &[u64], a: &[u64], b: &[u64], mins: &mut [u64]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512dq")
        {
            // SAFETY: the CPU supports the features the function is compiled for (checked above).
            unsafe { permute_min_avx512(set, a, b, mins) };
            return;
        }
    }
    permute_min_generic(set, a, b, mins)
}

/// The fraction of equal minima: the MinHash estimate of the Jaccard similarity.
pub fn estimate(a: &[u64], b: &[u64]) -> f64 {
    let eq = a.iter().zip(b).filter(|(x, y)| x == y).count();
    eq as f64 / a.len().max(1) as f64
}
