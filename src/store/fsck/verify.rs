//! The verify pass: every frame of every existing inode decoded and its CRC checked.
//! Raw and zstd frames decode here; LLM frames go through the caller's decoder, after
//! the canary frame showed that it is the model the store was written with.

use super::{
    CheckPhase, CheckProgress, Checker, LlmDecoder, Problem, ProblemKind as K, Severity, RESTORE,
};
use crate::frame::{self, Codec};
use crate::store::engine::Table;
use crate::store::extent::Extent;
use crate::store::keys;
use crate::store::records::HotChunk;
use crate::store::StoreError;
use crate::store::{During, StoreOp};

/// What decoding one frame showed.
enum Verdict {
    /// Intact: this many bytes of plaintext.
    Intact(u64),
    /// Does not decode, or decodes to bytes its CRC refuses.
    Bad(u64, String),
    /// LLM-coded, and there is no model to decode it.
    NoModel(u64),
    /// Its header was already found damaged: nothing more to learn.
    Skipped,
}

/// The verdict on a frame that needs no model; `None` for an LLM frame, which goes to
/// the batch.
fn decode_here(framed: &[u8], cs: u64, have_model: bool) -> Option<Verdict> {
    let Ok(h) = frame::parse_header(framed) else {
        return Some(Verdict::Skipped);
    };
    if h.plain_len > cs || h.codec == Codec::Lost {
        return Some(Verdict::Skipped);
    }
    if h.codec == Codec::Llm {
        return (!have_model).then_some(Verdict::NoModel(h.plain_len));
    }
    Some(match frame::decode(framed, None) {
        Ok(_) => Verdict::Intact(h.plain_len),
        Err(e) => Verdict::Bad(h.plain_len, e.to_string()),
    })
}

/// LLM frames waiting for the decoder, with where they are from.
#[derive(Default)]
struct Batch {
    frames: Vec<Vec<u8>>,
    at: Vec<(u64, u64)>,
}

/// Decodes a batch of LLM frames and judges each against its header.
fn decode_batch(batch: Batch, llm: &mut LlmDecoder<'_>) -> Vec<((u64, u64), Verdict)> {
    let headers: Vec<_> = batch
        .frames
        .iter()
        .map(|f| frame::parse_header(f).expect("parsed before it was batched"))
        .collect();
    let results = llm(batch.frames);
    batch
        .at
        .into_iter()
        .zip(headers)
        .zip(results)
        .map(|((at, h), r)| {
            let r = r.and_then(|plain| frame::verify(&h, &plain).map_err(|e| e.to_string()));
            let v = match r {
                Ok(()) => Verdict::Intact(h.plain_len),
                Err(e) => Verdict::Bad(h.plain_len, e),
            };
            (at, v)
        })
        .collect()
}

impl Checker<'_> {
    pub(super) fn verify(
        &mut self,
        mut llm: Option<LlmDecoder<'_>>,
        progress: &mut dyn FnMut(CheckProgress),
    ) -> Result<(), StoreError> {
        self.verify_canary(&mut llm);
        let total = self.verify_total;
        let cs = self.cs;
        let mut done = 0u64;
        progress(CheckProgress {
            phase: CheckPhase::Verify,
            done,
            total,
        });
        let mut bad = Vec::new();
        let mut batch = Batch::default();
        let nodes = &self.nodes;
        let counts = &mut self.counts;
        let mut judge = |(ino, index): (u64, u64), v: Verdict| {
            match v {
                Verdict::Intact(n) => {
                    counts.verified_frames += 1;
                    counts.verified_bytes += n;
                    done += n;
                }
                Verdict::Bad(n, e) => {
                    bad.push((ino, index, e));
                    done += n;
                }
                Verdict::NoModel(n) => {
                    counts.unverified_frames += 1;
                    counts.unverified_bytes += n;
                    done += n;
                }
                Verdict::Skipped => return,
            }
            progress(CheckProgress {
                phase: CheckPhase::Verify,
                done: done.min(total),
                total,
            });
        };
        for table in [Table::Chunk, Table::Extent] {
            let mut frames: Vec<(u64, u64, Vec<u8>)> = Vec::new();
            let mut flush = |frames: &mut Vec<(u64, u64, Vec<u8>)>,
                             batch: &mut Batch,
                             force: bool| {
                for (ino, index, framed) in frames.drain(..) {
                    match decode_here(&framed, cs, llm.is_some()) {
                        Some(v) => judge((ino, index), v),
                        None => {
                            batch.frames.push(framed);
                            batch.at.push((ino, index));
                        }
                    }
                }
                if batch.frames.len() >= super::VERIFY_BATCH || (force && !batch.frames.is_empty())
                {
                    if let Some(d) = llm.as_mut() {
                        for (at, v) in decode_batch(std::mem::take(batch), d) {
                            judge(at, v);
                        }
                    }
                }
            };
            self.store
                .engine
                .scan_checked(table, &[], None, &mut |k, v| {
                    let Some((ino, index)) = keys::chunk_of(k).filter(|_| k.len() == 16) else {
                        return true;
                    };
                    // A damaged record was reported by the data pass.
                    let Ok(v) = v else {
                        return true;
                    };
                    if nodes.get(&ino).is_none_or(|n| n.rec.is_none()) {
                        return true; // not a file's data: reported by the data pass
                    }
                    if table == Table::Chunk {
                        if let Ok(h) = HotChunk::decode(v) {
                            frames.push((ino, index, h.frame));
                        }
                    } else if let Ok(e) = Extent::decode(v) {
                        for c in e.chunks() {
                            frames.push((ino, c.index, c.frame.clone()));
                        }
                    }
                    flush(&mut frames, &mut batch, false);
                    true
                })
                .during(StoreOp::Read)?;
            flush(&mut frames, &mut batch, true);
        }
        for (ino, index, e) in bad {
            let what = self.bytes_of(index);
            self.add(
                Problem::error(
                    K::Decode,
                    Some(ino),
                    format!(
                        "the frame does not decode intact ({e}): {what} read as an I/O error; \
                         {RESTORE}"
                    ),
                )
                .at_chunk(index),
            );
        }
        if self.counts.unverified_frames > 0 {
            self.add(Problem {
                severity: Severity::Warning,
                ..Problem::error(
                    K::Unverified,
                    None,
                    format!(
                        "{} LLM-coded chunks ({} bytes of text) were not verified: no model to \
                         decode them (their headers were checked)",
                        self.counts.unverified_frames, self.counts.unverified_bytes
                    ),
                )
            });
        }
        Ok(())
    }

    /// Decodes the canary frame with the caller's model: if it fails, the model is not
    /// the one the store was written with, and every LLM frame would fail with it, so
    /// they are left unverified instead of each reported as damaged.
    fn verify_canary(&mut self, llm: &mut Option<LlmDecoder<'_>>) {
        let (Some(canary), Some(decoder)) = (self.canary.clone(), llm.as_mut()) else {
            return;
        };
        if frame::parse_header(&canary).is_err() {
            return; // reported by the namespace pass
        }
        let batch = Batch {
            frames: vec![canary],
            at: vec![(0, 0)],
        };
        if let Some((_, Verdict::Bad(_, e))) = decode_batch(batch, decoder).pop() {
            self.add(Problem::error(
                K::Decode,
                None,
                format!(
                    "the canary frame does not decode with this model ({e}): it is not the \
                     model the store was written with, so LLM-coded chunks were not decoded; \
                     verify with the model that wrote them"
                ),
            ));
            *llm = None;
        }
    }
}
