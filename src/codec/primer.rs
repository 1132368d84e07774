//! Primers: text every segment's tokens follow, so that a segment's first tokens are
//! predicted from context rather than from nothing.
//!
//! A 4 KiB segment coded from an empty context pays most for its first tokens: the model
//! does not yet know it is reading a JSONL log, a markdown answer or code. With coder
//! version 3 every segment is coded as if it followed the primer's tokens. A lane
//! computes the primer's KV state once (one token per step, as the coder runs, so the
//! state is bit-identical everywhere the code is) and starts every segment from it; what
//! it costs per segment is attention over the primer's cells.
//!
//! The primer is part of the codec: its id (a SHA-256 prefix of its bytes) is in the
//! [`CodecProfile`](super::CodecProfile), so a store or file coded with a primer this
//! build does not have is refused by name, never decoded with another one.
//!
//! [`BUILTIN`] (`primer-v1.txt`, 1,872 bytes) was written for llmfs, not taken from any
//! test corpus: an OpenAI-style chat completion record, two prompt/completion log
//! records (one with a fenced Python function), in the shapes LLM services log.

use super::profile::{CODER_VERSION, OLDEST_CODER_VERSION, PRIMER_ID_LEN};
use sha2::{Digest, Sha256};
use std::fmt;
use std::sync::{Arc, OnceLock};

/// The built-in primer's text.
const BUILTIN_TEXT: &str = include_str!("primer-v1.txt");
/// The built-in primer's name, for options and messages.
pub const BUILTIN: &str = "builtin-v1";

/// A primer: its bytes and their id.
#[derive(Clone, PartialEq, Eq)]
pub struct Primer {
    name: String,
    text: String,
    id: [u8; PRIMER_ID_LEN],
}

impl fmt::Debug for Primer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Primer({})", describe(Some(&self.id)))
    }
}

impl Primer {
    /// A primer from `text` under `name`; its id is the first bytes of the text's SHA-256.
    pub fn new(name: &str, text: String) -> Primer {
        let digest = Sha256::digest(text.as_bytes());
        let mut id = [0u8; PRIMER_ID_LEN];
        id.copy_from_slice(&digest[..PRIMER_ID_LEN]);
        Primer {
            name: name.into(),
            text,
            id,
        }
    }

    /// The primer built into this build ([`BUILTIN`]).
    pub fn builtin() -> Arc<Primer> {
        static P: OnceLock<Arc<Primer>> = OnceLock::new();
        Arc::clone(P.get_or_init(|| Arc::new(Primer::new(BUILTIN, BUILTIN_TEXT.into()))))
    }

    /// The primer's text, which every segment is coded as following.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The primer's id: the first [`PRIMER_ID_LEN`] bytes of the SHA-256 of its text.
    pub fn id(&self) -> [u8; PRIMER_ID_LEN] {
        self.id
    }

    /// The primer's name, for options and messages ([`BUILTIN`] for the built-in one).
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// A primer id in words: `builtin-v1 (ab12cd34ef56ab12)` for one this build has, the hex
/// id for another, `none` for no primer.
pub fn describe(id: Option<&[u8; PRIMER_ID_LEN]>) -> String {
    match id {
        None => "none".into(),
        Some(id) => {
            let hex = super::fingerprint::hex(id);
            match known(id) {
                Some(p) => format!("{} ({hex})", p.name),
                None => format!("{hex} (unknown to this build)"),
            }
        }
    }
}

/// The primer with this id, if this build has it.
pub fn known(id: &[u8; PRIMER_ID_LEN]) -> Option<Arc<Primer>> {
    let b = Primer::builtin();
    (b.id == *id).then_some(b)
}

/// How segments are coded: the coder version and the primer (version 3 on). The code
/// of a segment depends on both; they are recorded in every codec profile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Coding {
    /// The coder version ([`OLDEST_CODER_VERSION`] to [`CODER_VERSION`]).
    pub coder_version: u32,
    /// The primer segments start from; `None`: from the start token alone (always so
    /// before coder version 3).
    pub primer: Option<Arc<Primer>>,
}

/// A primer choice that cannot be coded with.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CodingError {
    /// The coder version is not one this build codes (older than [`OLDEST_CODER_VERSION`]
    /// or newer than [`CODER_VERSION`]).
    #[error("coder version {0}, which this build does not code ({OLDEST_CODER_VERSION} to {CODER_VERSION}){why}", why = if *.0 > CODER_VERSION { ": written by a newer llmfs" } else { "" })]
    Version(u32),
    /// A primer id (hex in the payload) that this build does not have.
    #[error("primer {0} is unknown to this build: decode it with the llmfs release that wrote it")]
    UnknownPrimer(String),
    /// A primer is recorded with a coder version older than 3, which had none.
    #[error("coder version {0} has no primer, but one is recorded")]
    PrimerTooOld(u32),
    /// A primer name other than `builtin`, [`BUILTIN`] or `none` was given.
    #[error("unknown primer `{0}`: use `{BUILTIN}` or `none`")]
    BadName(String),
}

impl Default for Coding {
    /// What this build writes: the current coder with the built-in primer.
    fn default() -> Coding {
        Coding {
            coder_version: CODER_VERSION,
            primer: Some(Primer::builtin()),
        }
    }
}

impl Coding {
    /// The current coder without a primer.
    pub fn unprimed() -> Coding {
        Coding {
            coder_version: CODER_VERSION,
            primer: None,
        }
    }

    /// The current coder with the primer named on a command line or mount option:
    /// `builtin` (or [`BUILTIN`]) or `none`.
    pub fn named(name: &str) -> Result<Coding, CodingError> {
        match name {
            "builtin" | BUILTIN => Ok(Coding::default()),
            "none" => Ok(Coding::unprimed()),
            other => Err(CodingError::BadName(other.into())),
        }
    }

    /// The coding a recorded profile's code needs: its coder version and primer, when
    /// this build has them.
    pub fn recorded(
        coder_version: u32,
        primer: Option<&[u8; PRIMER_ID_LEN]>,
    ) -> Result<Coding, CodingError> {
        if !(OLDEST_CODER_VERSION..=CODER_VERSION).contains(&coder_version) {
            return Err(CodingError::Version(coder_version));
        }
        let primer = match primer {
            None => None,
            Some(_) if coder_version < 3 => return Err(CodingError::PrimerTooOld(coder_version)),
            Some(id) => Some(
                known(id).ok_or_else(|| CodingError::UnknownPrimer(super::fingerprint::hex(id)))?,
            ),
        };
        Ok(Coding {
            coder_version,
            primer,
        })
    }

    /// Every coding this build writes, the default first: what a container that records
    /// its coding by digest is tried against.
    pub fn candidates() -> [Coding; 2] {
        [Coding::default(), Coding::unprimed()]
    }

    /// The coding of a recorded profile's code.
    pub fn of_profile(profile: &super::CodecProfile) -> Result<Coding, CodingError> {
        Coding::recorded(profile.coder_version, profile.primer.as_ref())
    }

    /// The id of the primer, or `None` without one.
    pub fn primer_id(&self) -> Option<[u8; PRIMER_ID_LEN]> {
        self.primer.as_ref().map(|p| p.id)
    }
}

impl fmt::Display for Coding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "coder {}, primer {}",
            self.coder_version,
            describe(self.primer_id().as_ref())
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_primer_is_known_by_its_id_and_pinned() {
        let b = Primer::builtin();
        assert_eq!(known(&b.id()).as_deref(), Some(&*b));
        assert!(describe(Some(&b.id())).starts_with("builtin-v1 ("));
        assert!(describe(Some(&[0; PRIMER_ID_LEN])).contains("unknown"));
        assert_eq!(describe(None), "none");
        // Changing the text changes the code of every file written with it: a new text
        // is a new primer (primer-v2.txt), never an edit of this one.
        assert_eq!(
            super::super::fingerprint::hex(&b.id()),
            EXPECTED_BUILTIN_ID,
            "primer-v1.txt changed"
        );
    }

    /// The id of primer-v1.txt.
    const EXPECTED_BUILTIN_ID: &str = "977c97d39054c42a";

    #[test]
    fn recorded_codings_are_checked() {
        let b = Primer::builtin();
        assert_eq!(
            Coding::recorded(CODER_VERSION, Some(&b.id())).unwrap(),
            Coding::default()
        );
        assert_eq!(Coding::recorded(2, None).unwrap().primer, None);
        assert_eq!(
            Coding::recorded(2, Some(&b.id())),
            Err(CodingError::PrimerTooOld(2))
        );
        assert!(matches!(
            Coding::recorded(CODER_VERSION, Some(&[1; PRIMER_ID_LEN])),
            Err(CodingError::UnknownPrimer(_))
        ));
        assert!(Coding::recorded(CODER_VERSION + 1, None)
            .unwrap_err()
            .to_string()
            .contains("newer llmfs"));
        assert!(Coding::recorded(1, None).is_err());
        assert_eq!(Coding::named("none").unwrap(), Coding::unprimed());
        assert_eq!(Coding::named("builtin").unwrap(), Coding::default());
        assert!(Coding::named("other").is_err());
    }
}
