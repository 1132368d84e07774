//! Arithmetic (range) coding of a symbol stream under an adaptive probability model.
//!
//! The coder itself is `constriction`'s range coder (32-bit words, 64-bit state); this
//! module owns the seam between it and whatever predicts the next symbol:
//!
//! - [`ProbabilityModel`]: the small trait a predictor implements (a language model in
//!   [`super::llm`], synthetic models in the tests below).
//! - [`Distribution`]: integer frequencies summing to exactly `2^PRECISION`, every
//!   symbol nonzero, built by deterministic integer code from floating-point
//!   probabilities ([`Distribution::from_probabilities`]).
//! - [`encode`] / [`decode`]: drive the coder. The compressed words are written big
//!   endian and trailing zero bytes are dropped: the decoder reads missing words as zero,
//!   so padding them back is exact and saves up to a word per segment.

// Defines an on-disk layout (an LLM frame's payload: the coder's words); see clippy.toml.
#![allow(clippy::disallowed_methods)]

use constriction::stream::model::{DecoderModel, EncoderModel, EntropyModel};
use constriction::stream::queue::{DefaultRangeDecoder, DefaultRangeEncoder, EncoderSituation};
use constriction::stream::{Decode, Encode};
use std::num::NonZeroU32;

/// Bits of fixed-point precision of the frequencies. 24 is the most constriction's
/// default range coder allows; with a 49,152-token vocabulary the floor frequency of one
/// per token costs under 0.005 bits per token.
pub const PRECISION: usize = 24;
const TOTAL: u32 = 1 << PRECISION;

/// Why coding a symbol stream failed.
#[derive(Debug, thiserror::Error)]
pub enum CoderError {
    /// The probability model itself failed (a llama.cpp decode error, a model that breaks
    /// an invariant); the message says how.
    #[error("the probability model failed: {0}")]
    Model(String),
    /// A symbol to encode, or one a model was asked to push, is not in the model's
    /// alphabet.
    #[error("symbol {0} is outside the model's alphabet")]
    SymbolOutOfRange(u32),
    /// The compressed bytes are not a valid range code for this model (corrupt or
    /// truncated input, or a different model).
    #[error("compressed data is invalid")]
    InvalidData,
    /// A distribution was asked for over zero symbols or over `2^PRECISION` or more,
    /// which cannot all get a nonzero frequency.
    #[error("alphabet of {0} symbols does not fit a {PRECISION}-bit frequency table")]
    AlphabetTooLarge(usize),
    /// A cancel flag the caller handed the model was set; coding stopped between symbols.
    #[error("cancelled")]
    Cancelled,
}

/// A predictor of the next symbol. Encoder and decoder drive identical instances through
/// identical calls, so the predictions must be a deterministic function of the symbols
/// pushed so far.
pub trait ProbabilityModel {
    /// The distribution of the next symbol.
    fn distribution(&mut self) -> Result<&Distribution, CoderError>;
    /// Records that `symbol` came, so the next prediction can depend on it.
    fn push(&mut self, symbol: u32) -> Result<(), CoderError>;
    /// Told by the encoder of each symbol it coded, before any `push`; for statistics.
    fn coded(&mut self, _symbol: u32) {}
}

/// Integer frequencies of an alphabet, as a cumulative table: symbol `s` owns the
/// interval `cdf[s]..cdf[s + 1]` of `0..2^PRECISION`, and no interval is empty.
#[derive(Clone, Debug, Default)]
pub struct Distribution {
    cdf: Vec<u32>,
}

impl Distribution {
    /// The uniform distribution over `n` symbols.
    pub fn uniform(n: usize) -> Result<Self, CoderError> {
        let mut d = Distribution::default();
        d.set_from_weights(&vec![1.0; n])?;
        Ok(d)
    }

    /// A table built from `probs` as by [`Distribution::set_from_weights`]; fails with
    /// [`CoderError::AlphabetTooLarge`] for an empty or oversized alphabet.
    pub fn from_probabilities(probs: &[f32]) -> Result<Self, CoderError> {
        let mut d = Distribution::default();
        d.set_from_weights(probs)?;
        Ok(d)
    }

    /// Number of symbols in the alphabet.
    pub fn len(&self) -> usize {
        self.cdf.len().saturating_sub(1)
    }

    /// True for a table with no symbols (only a `Default` one; every built table has at
    /// least one).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Frequency of `symbol` out of `2^PRECISION`.
    pub fn frequency(&self, symbol: u32) -> Option<u32> {
        let s = symbol as usize;
        Some(self.cdf.get(s + 1)? - self.cdf[s])
    }

    /// Rebuilds the table in place from nonnegative weights (probabilities or
    /// unnormalised). Every symbol gets frequency at least one; the rest of the mass is
    /// shared in proportion to the weights, rounding down, and what rounding leaves over
    /// goes to the heaviest symbol. Pure integer arithmetic after one float product per
    /// symbol, so equal weights always give equal tables.
    pub fn set_from_weights(&mut self, weights: &[f32]) -> Result<(), CoderError> {
        let n = weights.len();
        if n == 0 || n >= TOTAL as usize {
            return Err(CoderError::AlphabetTooLarge(n));
        }
        let sum: f64 = weights.iter().map(|&w| f64::from(w.max(0.0))).sum();
        let spare = f64::from(TOTAL - n as u32);
        let scale = if sum > 0.0 && sum.is_finite() {
            spare / sum
        } else {
            0.0
        };
        self.cdf.clear();
        self.cdf.reserve(n + 1);
        self.cdf.push(0);
        let mut acc: u32 = 0;
        let (mut best, mut best_freq) = (0usize, 0u32);
        for (i, &w) in weights.iter().enumerate() {
            // `as` saturates, and NaN becomes 0: a bad weight cannot overflow the table.
            let extra = (f64::from(w.max(0.0)) * scale) as u32;
            let freq = 1 + extra.min(TOTAL - n as u32);
            if freq > best_freq {
                (best, best_freq) = (i, freq);
            }
            acc = acc.saturating_add(freq);
            self.cdf.push(acc);
        }
        if acc > TOTAL {
            // Only reachable through float rounding in `scale`: fall back to uniform
            // extras rather than a table that does not sum to the total.
            return self.set_from_weights(&vec![1.0; n]);
        }
        let leftover = TOTAL - acc;
        for c in &mut self.cdf[best + 1..] {
            *c += leftover;
        }
        Ok(())
    }
}

impl EntropyModel<PRECISION> for Distribution {
    type Symbol = u32;
    type Probability = u32;
}

impl EncoderModel<PRECISION> for Distribution {
    fn left_cumulative_and_probability(
        &self,
        symbol: impl std::borrow::Borrow<u32>,
    ) -> Option<(u32, NonZeroU32)> {
        let s = *symbol.borrow() as usize;
        let left = *self.cdf.get(s)?;
        let right = *self.cdf.get(s + 1)?;
        Some((left, NonZeroU32::new(right - left)?))
    }
}

impl DecoderModel<PRECISION> for Distribution {
    fn quantile_function(&self, quantile: u32) -> (u32, u32, NonZeroU32) {
        // The last symbol whose left edge is <= quantile. The table starts at 0 and ends
        // at TOTAL > quantile, so the index is always a real symbol.
        let idx = self.cdf.partition_point(|&c| c <= quantile) - 1;
        let left = self.cdf[idx];
        let freq = self.cdf[idx + 1] - left;
        (
            idx as u32,
            left,
            NonZeroU32::new(freq).expect("frequencies are nonzero"),
        )
    }
}

/// Codes `symbols` under `model`, which is advanced through every symbol.
pub fn encode(symbols: &[u32], model: &mut dyn ProbabilityModel) -> Result<Vec<u8>, CoderError> {
    let mut encoder = DefaultRangeEncoder::new();
    for (i, &s) in symbols.iter().enumerate() {
        let dist = model.distribution()?;
        encoder
            .encode_symbol(s, dist)
            .map_err(|_| CoderError::SymbolOutOfRange(s))?;
        model.coded(s);
        // The model never needs to see the last symbol.
        if i + 1 < symbols.len() {
            model.push(s)?;
        }
    }
    let words = seal(encoder);
    let mut bytes: Vec<u8> = words.iter().flat_map(|w| w.to_be_bytes()).collect();
    while bytes.last() == Some(&0) {
        bytes.pop();
    }
    Ok(bytes)
}

/// Ends the code with the shortest point that still identifies the final interval.
///
/// constriction's own `into_compressed` always writes a whole word at the end; the
/// decoder only needs some point inside the final interval `[lower, lower + range)`, and
/// reads the words after the end as zeros. So the point with the most trailing zero bits
/// is the cheapest: after trimming zero bytes it costs about `64 - log2(range)` bits,
/// about a byte a segment less, which is what keeps the coded size within 1% of the
/// cross-entropy on 4 KiB segments.
fn seal(encoder: DefaultRangeEncoder) -> Vec<u32> {
    let (mut words, state, situation) = encoder.into_raw_parts();
    let range = state.range().get();
    if range == u64::MAX && situation == EncoderSituation::Normal {
        return words; // nothing was encoded
    }
    let lo = u128::from(state.lower());
    let hi = lo + u128::from(range);
    let point = (0..128)
        .rev()
        .map(|k| lo.div_ceil(1u128 << k) << k)
        .find(|&p| p < hi)
        .unwrap_or(lo);
    if let EncoderSituation::Inverted(n, first) = situation {
        // Words held back while a carry was undecided: the point settles it.
        let (head, rest) = if point >> 64 != 0 {
            (first.wrapping_add(1), 0)
        } else {
            (first, u32::MAX)
        };
        words.push(head);
        words.extend(std::iter::repeat_n(rest, n.get() - 1));
    }
    let point = point as u64;
    words.push((point >> 32) as u32);
    words.push(point as u32);
    words
}

/// Decodes symbols one at a time, so that the caller can look at each (and stop) before
/// the model is advanced.
pub struct SymbolDecoder {
    decoder: DefaultRangeDecoder,
}

impl SymbolDecoder {
    /// A decoder over `bytes`: big-endian 32-bit words, a short last word zero-padded
    /// (the encoder's dropped trailing zeros). Fails with [`CoderError::InvalidData`]
    /// when constriction rejects the initial state.
    pub fn new(bytes: &[u8]) -> Result<SymbolDecoder, CoderError> {
        let words: Vec<u32> = bytes
            .chunks(4)
            .map(|c| {
                let mut w = [0u8; 4];
                w[..c.len()].copy_from_slice(c);
                u32::from_be_bytes(w)
            })
            .collect();
        let decoder =
            DefaultRangeDecoder::from_compressed(words).map_err(|_| CoderError::InvalidData)?;
        Ok(SymbolDecoder { decoder })
    }

    /// The next symbol under `model`'s current distribution. The caller pushes it into
    /// the model before asking for another.
    pub fn next(&mut self, model: &mut dyn ProbabilityModel) -> Result<u32, CoderError> {
        let dist = model.distribution()?;
        self.decoder
            .decode_symbol(dist)
            .map_err(|_| CoderError::InvalidData)
    }
}

/// Decodes symbols from `bytes` until `more` returns false after a symbol. `more` is
/// where the caller bounds the output (a symbol count, a byte length), so corrupted
/// input cannot make this loop forever.
pub fn decode(
    bytes: &[u8],
    model: &mut dyn ProbabilityModel,
    mut more: impl FnMut(u32) -> Result<bool, CoderError>,
) -> Result<(), CoderError> {
    let mut decoder = SymbolDecoder::new(bytes)?;
    loop {
        let s = decoder.next(model)?;
        if !more(s)? {
            return Ok(());
        }
        model.push(s)?;
    }
}

/// Bits an ideal coder would spend on `symbol` under `dist`.
pub fn cost_bits(dist: &Distribution, symbol: u32) -> f64 {
    dist.frequency(symbol).map_or(f64::INFINITY, |f| {
        f64::from(PRECISION as u32) - f64::from(f).log2()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fixed distribution, whatever came before.
    struct Fixed(Distribution);

    impl ProbabilityModel for Fixed {
        fn distribution(&mut self) -> Result<&Distribution, CoderError> {
            Ok(&self.0)
        }
        fn push(&mut self, _: u32) -> Result<(), CoderError> {
            Ok(())
        }
    }

    /// An adaptive order-1 model: predicts the symbol after the last one, with counts.
    struct Order1 {
        n: usize,
        last: usize,
        counts: Vec<f32>,
        dist: Distribution,
    }

    impl Order1 {
        fn new(n: usize) -> Self {
            Order1 {
                n,
                last: 0,
                counts: vec![1.0; n * n],
                dist: Distribution::default(),
            }
        }
    }

    impl ProbabilityModel for Order1 {
        fn distribution(&mut self) -> Result<&Distribution, CoderError> {
            let row = &self.counts[self.last * self.n..(self.last + 1) * self.n];
            self.dist.set_from_weights(row)?;
            Ok(&self.dist)
        }
        fn push(&mut self, s: u32) -> Result<(), CoderError> {
            self.counts[self.last * self.n + s as usize] += 1.0;
            self.last = s as usize;
            Ok(())
        }
    }

    fn round_trip(symbols: &[u32], mut make: impl FnMut() -> Box<dyn ProbabilityModel>) -> Vec<u8> {
        let bytes = encode(symbols, &mut *make()).unwrap();
        let mut out = Vec::new();
        decode(&bytes, &mut *make(), |s| {
            out.push(s);
            Ok(out.len() < symbols.len())
        })
        .unwrap();
        assert_eq!(out, symbols);
        bytes
    }

    fn lcg(seed: u64) -> impl FnMut() -> u64 {
        let mut x = seed;
        move || {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            x >> 33
        }
    }

    #[test]
    fn table_sums_to_total_and_is_never_zero() {
        for weights in [
            vec![1.0f32; 49_152],
            vec![0.0; 10],
            vec![f32::NAN, 1.0, f32::INFINITY],
            vec![1e-30, 1.0, 1e-30],
            vec![1.0],
        ] {
            let d = Distribution::from_probabilities(&weights).unwrap();
            assert_eq!(*d.cdf.last().unwrap(), TOTAL);
            assert!((0..weights.len() as u32).all(|s| d.frequency(s).unwrap() >= 1));
        }
        assert!(Distribution::from_probabilities(&[]).is_err());
    }

    #[test]
    fn uniform_costs_log2_n() {
        let mut next = lcg(1);
        let symbols: Vec<u32> = (0..10_000).map(|_| (next() % 256) as u32).collect();
        let bytes = round_trip(&symbols, || {
            Box::new(Fixed(Distribution::uniform(256).unwrap()))
        });
        let ideal = symbols.len(); // 8 bits a symbol
        assert!(
            bytes.len() <= ideal + 8,
            "{} bytes for an ideal {}",
            bytes.len(),
            ideal
        );
    }

    #[test]
    fn very_skewed_model_is_close_to_entropy() {
        let probs = [0.999f32, 0.0005, 0.0005];
        let mut next = lcg(2);
        let symbols: Vec<u32> = (0..50_000)
            .map(|_| match next() % 2000 {
                0 => 1,
                1 => 2,
                _ => 0,
            })
            .collect();
        let dist = Distribution::from_probabilities(&probs).unwrap();
        let ideal_bits: f64 = symbols.iter().map(|&s| cost_bits(&dist, s)).sum();
        let bytes = round_trip(&symbols, || Box::new(Fixed(dist.clone())));
        assert!((bytes.len() * 8) as f64 <= ideal_bits * 1.01 + 64.0);
    }

    #[test]
    fn tiny_probabilities_stay_encodable() {
        // A symbol the model all but excludes must still code and decode.
        let mut probs = vec![0.0f32; 49_152];
        probs[7] = 1.0;
        let dist = Distribution::from_probabilities(&probs).unwrap();
        let symbols = [7, 49_151, 0, 7, 7, 12_345, 7];
        round_trip(&symbols, || Box::new(Fixed(dist.clone())));
    }

    #[test]
    fn one_symbol_alphabet_costs_almost_nothing() {
        let symbols = vec![0u32; 100_000];
        let bytes = round_trip(&symbols, || {
            Box::new(Fixed(Distribution::uniform(1).unwrap()))
        });
        assert!(bytes.len() <= 4, "{} bytes", bytes.len());
    }

    #[test]
    fn seal_is_never_longer_than_constrictions() {
        let mut next = lcg(5);
        for n in 1..300 {
            let probs: Vec<f32> = (0..50).map(|_| (next() % 1000) as f32).collect();
            let dist = Distribution::from_probabilities(&probs).unwrap();
            let symbols: Vec<u32> = (0..n).map(|_| (next() % 50) as u32).collect();
            let ours = round_trip(&symbols, || Box::new(Fixed(dist.clone())));
            let mut enc = DefaultRangeEncoder::new();
            for &s in &symbols {
                enc.encode_symbol(s, &dist).unwrap();
            }
            let theirs = enc.into_compressed().unwrap();
            let mut theirs: Vec<u8> = theirs.iter().flat_map(|w| w.to_be_bytes()).collect();
            while theirs.last() == Some(&0) {
                theirs.pop();
            }
            assert!(
                ours.len() <= theirs.len(),
                "{} > {} bytes",
                ours.len(),
                theirs.len()
            );
        }
    }

    #[test]
    fn seal_settles_a_pending_carry() {
        use constriction::stream::queue::RangeCoderState;
        // An inverted situation: one held-back word whose carry depends on the point.
        let mut next = lcg(6);
        for _ in 0..10_000 {
            let first = (next() as u32).max(1) - 1;
            let range = (next() << 31 | next()) | 1 << 32;
            let lower = u64::MAX - (next() % range.saturating_sub(1).max(1));
            if lower.checked_add(range).is_some() {
                continue; // not wrapping: not the case under test
            }
            let state = RangeCoderState::new(lower, range).unwrap();
            let situation =
                EncoderSituation::Inverted(std::num::NonZeroUsize::new(1).unwrap(), first);
            let words = seal(DefaultRangeEncoder::from_raw_parts(
                Vec::new(),
                state,
                situation,
            ));
            assert!(words.len() <= 3);
            let value = words
                .iter()
                .chain(std::iter::repeat(&0))
                .take(3)
                .fold(0u128, |v, &w| v << 32 | u128::from(w));
            let lo = u128::from(first) << 64 | u128::from(lower);
            assert!(value >= lo && value < lo + u128::from(range), "{words:x?}");
        }
    }

    #[test]
    fn empty_input_is_empty_output() {
        let bytes = encode(&[], &mut Fixed(Distribution::uniform(5).unwrap())).unwrap();
        assert!(bytes.is_empty());
    }

    #[test]
    fn adaptive_model_round_trip() {
        let mut next = lcg(3);
        let mut s = 0u32;
        let symbols: Vec<u32> = (0..20_000)
            .map(|_| {
                s = if next() % 10 < 8 {
                    (s + 1) % 16
                } else {
                    (next() % 16) as u32
                };
                s
            })
            .collect();
        let bytes = round_trip(&symbols, || Box::new(Order1::new(16)));
        assert!(
            bytes.len() < symbols.len() / 2,
            "an adaptive model must beat 4 bits a symbol"
        );
    }

    #[test]
    fn symbol_outside_alphabet_is_an_error() {
        let err = encode(&[3], &mut Fixed(Distribution::uniform(3).unwrap())).unwrap_err();
        assert!(matches!(err, CoderError::SymbolOutOfRange(3)));
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_decoder() {
        let mut next = lcg(4);
        for len in 0..200 {
            let bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            let mut count = 0;
            let _ = decode(&bytes, &mut Order1::new(7), |_| {
                count += 1;
                Ok(count < 500)
            });
        }
    }
}
