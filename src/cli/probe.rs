//! `llmfs bench --probe-mix`: would mixing the language model with cheap adaptive models
//! save bits? A measurement, not a codec: for every token of every segment it takes the
//! model's probability of the token that came (from the same integer distribution the
//! coder uses) and those of cheap models that see only the segment's own past (and the
//! primer): token n-grams of orders 1 to 3 and a match model. It reports the bits of the
//! model alone against two mixers:
//!
//! - *linear*: `p = sum w_i p_i`, weights updated after every token by exponentiated
//!   gradient (`w_i *= (p_i / p)^rate`, renormalised, each kept above a floor);
//! - *by match*: the same, with one weight set per match length class (none, 1-7,
//!   8-15, 16 or more tokens), so the mix can trust a long match and ignore a short one.
//!
//! A mixer codes with the whole mixed distribution, so only the probability of the token
//! that came matters for its cost: this is exact for the bits, and the time the cheap
//! models take is reported against the model's.

use anyhow::Context;
use llmfs::codec::coder::cost_bits;
use llmfs::codec::llm::LlmModel;
use llmfs::codec::primer::Coding;
use llmfs::codec::segment::split_utf8_edges;
use llmfs::codec::TokenModel;
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Orders of the token n-grams.
const ORDERS: [usize; 3] = [1, 2, 3];
/// Shortest history the match model looks up.
const MATCH_MIN: usize = 3;
/// Models mixed: the LLM, the match model, one per n-gram order.
const MODELS: usize = 2 + ORDERS.len();
const RATE: f64 = 0.02;
const FLOOR: f64 = 1e-4;

/// Counts of the tokens that followed each context of one order.
#[derive(Default)]
struct NGram {
    order: usize,
    next: HashMap<Vec<u32>, HashMap<u32, u32>>,
}

impl NGram {
    /// Witten-Bell without a lower order: `c(t) / (n + distinct)`; 0 for a context never
    /// seen or a token never seen after it (the mix's other models cover it).
    fn p(&self, history: &[u32], token: u32) -> f64 {
        if history.len() < self.order {
            return 0.0;
        }
        let ctx = &history[history.len() - self.order..];
        self.next.get(ctx).map_or(0.0, |m| {
            let n: u32 = m.values().sum();
            f64::from(m.get(&token).copied().unwrap_or(0)) / f64::from(n + m.len() as u32)
        })
    }

    fn add(&mut self, history: &[u32], token: u32) {
        if history.len() >= self.order {
            let ctx = history[history.len() - self.order..].to_vec();
            *self.next.entry(ctx).or_default().entry(token).or_insert(0) += 1;
        }
    }
}

/// Predicts the token that followed the longest earlier occurrence of the recent
/// history, with a confidence learned per match length class.
#[derive(Default)]
struct Match {
    /// (hits, tries) per length class.
    seen: [(u32, u32); 4],
}

impl Match {
    /// The predicted token and the length of the match behind it.
    fn predict(history: &[u32]) -> Option<(u32, usize)> {
        let n = history.len();
        if n <= MATCH_MIN {
            return None;
        }
        let tail = &history[n - MATCH_MIN..];
        // The most recent earlier occurrence, extended backwards.
        (MATCH_MIN..n).rev().find_map(|end| {
            (history[end - MATCH_MIN..end] == *tail && end < n).then(|| {
                let mut len = MATCH_MIN;
                while len < end && history[end - 1 - len] == history[n - 1 - len] {
                    len += 1;
                }
                (history[end], len)
            })
        })
    }

    fn class(len: usize) -> usize {
        match len {
            0 => 0,
            1..=7 => 1,
            8..=15 => 2,
            _ => 3,
        }
    }

    fn p(&self, predicted: Option<(u32, usize)>, token: u32) -> f64 {
        match predicted {
            Some((t, len)) => {
                let (hits, tries) = self.seen[Self::class(len)];
                let conf = (f64::from(hits) + 0.5) / (f64::from(tries) + 1.0);
                if t == token {
                    conf
                } else {
                    0.0
                }
            }
            None => 0.0,
        }
    }

    fn update(&mut self, predicted: Option<(u32, usize)>, token: u32) {
        if let Some((t, len)) = predicted {
            let s = &mut self.seen[Self::class(len)];
            s.1 += 1;
            s.0 += u32::from(t == token);
        }
    }
}

/// Mixing weights, updated by exponentiated gradient.
#[derive(Clone)]
struct Weights([f64; MODELS]);

impl Default for Weights {
    fn default() -> Self {
        let mut w = [0.02; MODELS];
        w[0] = 1.0 - 0.02 * (MODELS - 1) as f64;
        Weights(w)
    }
}

impl Weights {
    fn mix(&self, p: &[f64; MODELS]) -> f64 {
        self.0.iter().zip(p).map(|(w, p)| w * p).sum()
    }

    fn update(&mut self, p: &[f64; MODELS], mixed: f64) {
        for (w, &pi) in self.0.iter_mut().zip(p) {
            *w = (*w * (pi / mixed).powf(RATE)).max(FLOOR);
        }
        let sum: f64 = self.0.iter().sum();
        for w in &mut self.0 {
            *w /= sum;
        }
    }
}

#[derive(Default)]
struct Totals {
    tokens: u64,
    llm_bits: f64,
    linear_bits: f64,
    by_match_bits: f64,
    model_time: Duration,
    cheap_time: Duration,
}

/// Runs the probe over `files` in segments of `segment_size` under `coding`; prints a
/// markdown table.
pub fn run(
    model: &LlmModel,
    coding: &Coding,
    files: &[PathBuf],
    segment_size: usize,
) -> anyhow::Result<()> {
    let mut session = model.session(coding, segment_size)?;
    session.reset()?;
    let primer: Vec<u32> = match &coding.primer {
        Some(p) => model
            .tokenize_exact(p.text())
            .context("the primer does not tokenize exactly")?,
        None => Vec::new(),
    };
    println!("\n### Mixing probe: the model alone against the model mixed with cheap models, {segment_size} B segments, {coding}\n");
    println!("| file | tokens | model alone, bits/token | linear mix | saving | mix by match length | saving | cheap models' time / model's |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    let mut all = Totals::default();
    for path in files {
        let data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let mut t = Totals::default();
        for seg in data.chunks(segment_size) {
            let Some((_, body, _)) = split_utf8_edges(seg) else {
                continue;
            };
            let Some(tokens) = model.tokenize_exact(body) else {
                continue;
            };
            probe_segment(&mut session, &primer, &tokens, &mut t)?;
        }
        print_row(
            &path.file_name().map_or_else(
                || path.display().to_string(),
                |n| n.to_string_lossy().into(),
            ),
            &t,
        );
        all.tokens += t.tokens;
        all.llm_bits += t.llm_bits;
        all.linear_bits += t.linear_bits;
        all.by_match_bits += t.by_match_bits;
        all.model_time += t.model_time;
        all.cheap_time += t.cheap_time;
    }
    print_row("**total**", &all);
    println!("\nThe mix pays if it saves at least 3% at no more than 10% of the speed; a coder would also mix over the whole vocabulary per token (one more pass over it, as the model's softmax does).");
    Ok(())
}

fn print_row(name: &str, t: &Totals) {
    let per = |bits: f64| bits / t.tokens.max(1) as f64;
    let saving = |bits: f64| 100.0 * (1.0 - bits / t.llm_bits.max(1e-9));
    println!(
        "| {name} | {} | {:.3} | {:.3} | {:.1}% | {:.3} | {:.1}% | {:.1}% |",
        t.tokens,
        per(t.llm_bits),
        per(t.linear_bits),
        saving(t.linear_bits),
        per(t.by_match_bits),
        saving(t.by_match_bits),
        100.0 * t.cheap_time.as_secs_f64() / t.model_time.as_secs_f64().max(1e-9)
    );
}

/// One segment from the session's fresh state, the cheap models from the primer's.
fn probe_segment(
    session: &mut impl TokenModel,
    primer: &[u32],
    tokens: &[u32],
    t: &mut Totals,
) -> anyhow::Result<()> {
    session.reset()?;
    let mut history: Vec<u32> = primer.to_vec();
    let mut grams: Vec<NGram> = ORDERS
        .iter()
        .map(|&order| NGram {
            order,
            ..NGram::default()
        })
        .collect();
    for i in 0..history.len() {
        for g in &mut grams {
            g.add(&history[..i], history[i]);
        }
    }
    let mut matcher = Match::default();
    let mut linear = Weights::default();
    let mut by_match = vec![Weights::default(); 4];
    for &token in tokens {
        let t0 = Instant::now();
        let p_llm = (-cost_bits(session.distribution()?, token)).exp2();
        let t1 = Instant::now();
        let predicted = Match::predict(&history);
        let mut p = [0.0; MODELS];
        p[0] = p_llm;
        p[1] = matcher.p(predicted, token);
        for (pi, g) in p[2..].iter_mut().zip(&grams) {
            *pi = g.p(&history, token);
        }
        let m_lin = linear.mix(&p);
        let class = Match::class(predicted.map_or(0, |(_, l)| l));
        let m_match = by_match[class].mix(&p);
        linear.update(&p, m_lin);
        by_match[class].update(&p, m_match);
        matcher.update(predicted, token);
        for g in &mut grams {
            g.add(&history, token);
        }
        history.push(token);
        let t2 = Instant::now();
        session.push(token)?;
        t.model_time += t1 - t0 + t2.elapsed();
        t.cheap_time += t2 - t1;
        t.tokens += 1;
        t.llm_bits -= p_llm.log2();
        t.linear_bits -= m_lin.log2();
        t.by_match_bits -= m_match.log2();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_match_model_finds_the_longest_recent_repeat() {
        let h = [1, 2, 3, 4, 9, 1, 2, 3, 4, 7, 2, 3, 4];
        // "2 3 4" last occurred before 7.
        assert_eq!(Match::predict(&h), Some((7, 3)));
        assert_eq!(Match::predict(&[1, 2, 3]), None);
        let mut g = NGram {
            order: 1,
            ..NGram::default()
        };
        g.add(&[5], 6);
        g.add(&[5], 6);
        assert!((g.p(&[5], 6) - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(g.p(&[4], 6), 0.0);
    }

    #[test]
    fn weights_move_to_the_model_that_predicts() {
        let mut w = Weights::default();
        for _ in 0..200 {
            let p = [0.1, 0.9, 0.0, 0.0, 0.0];
            let m = w.mix(&p);
            w.update(&p, m);
        }
        assert!(w.0[1] > w.0[0], "{:?}", w.0);
        assert!(w.0.iter().all(|&x| x >= FLOOR));
    }
}
