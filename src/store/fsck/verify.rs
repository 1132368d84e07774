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

fn decode(framed: &[u8], cs: u64, llm: &mut Option<LlmDecoder<'_>>) -> Verdict {
    let Ok(h) = frame::parse_header(framed) else {
        return Verdict::Skipped;
    };
    if h.plain_len > cs || h.codec == Codec::Lost {
        return Verdict::Skipped;
    }
    let result = match (h.codec, llm.as_mut()) {
        (Codec::Llm, None) => return Verdict::NoModel(h.plain_len),
        (Codec::Llm, Some(decode)) => {
            decode(framed).and_then(|plain| frame::verify(&h, &plain).map_err(|e| e.to_string()))
        }
        _ => frame::decode(framed, None)
            .map(|_| ())
            .map_err(|e| e.to_string()),
    };
    match result {
        Ok(()) => Verdict::Intact(h.plain_len),
        Err(e) => Verdict::Bad(h.plain_len, e),
    }
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
        for table in [Table::Chunk, Table::Extent] {
            let nodes = &self.nodes;
            let counts = &mut self.counts;
            let mut one = |ino: u64, index: u64, framed: &[u8]| {
                match decode(framed, cs, &mut llm) {
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
                            one(ino, index, &h.frame);
                        }
                    } else if let Ok(e) = Extent::decode(v) {
                        for c in e.chunks() {
                            one(ino, c.index, &c.frame);
                        }
                    }
                    true
                })?;
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
        let (Some(canary), Some(_)) = (self.canary.as_ref(), llm.as_ref()) else {
            return;
        };
        if let Verdict::Bad(_, e) = decode(canary, u64::MAX, llm) {
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
