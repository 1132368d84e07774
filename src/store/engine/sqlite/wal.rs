//! Reading an SQLite write-ahead log (the `-wal` file) without SQLite: finding damage
//! that SQLite's own recovery would hide, and rebuilding a database image from the
//! frames that are still intact.
//!
//! This module owns the WAL format only; it never opens the database through SQLite.
//!
//! # Why
//!
//! On open, SQLite replays frames in order while their salts match the header and
//! their *cumulative* checksum matches, keeps everything up to the last commit frame
//! of that run and silently ignores the rest. A torn write at the end of the log is
//! the case this was made for; a flipped bit in the middle looks the same to SQLite,
//! and every commit after it is dropped without a word.
//!
//! Each frame stores its own cumulative checksum, so frame n+1 can be verified on
//! its own by seeding the checksum with frame n's *stored* value, whether frame n is
//! intact or not. Damage in the middle therefore shows as "frame k fails, later frames
//! of the same generation verify on their own", which a torn tail never shows. A
//! flipped bit in frame k's stored checksum makes k and k+1 fail and k+2 verify; frame
//! k+1 then verifies when seeded with the checksum *recomputed* over frame k, which
//! also proves that k's page data is intact ([`FrameInfo::data_ok`]).
//!
//! # Layouts read
//!
//! WAL header, 32 bytes, every field a big-endian u32:
//!
//! | offset | field              | notes                                                     |
//! |--------|--------------------|-----------------------------------------------------------|
//! | 0      | magic              | 0x377f0682 or 0x377f0683; low bit 1: checksum words big-endian, 0: little-endian |
//! | 4      | format version     | 3007000                                                   |
//! | 8      | page size          | power of two, 512..=65536                                 |
//! | 12     | checkpoint seq.    | informational                                             |
//! | 16     | salt-1             | changes whenever the log restarts (a new generation)      |
//! | 20     | salt-2             | random per generation                                     |
//! | 24     | checksum-1         | over header bytes 0..24, seed (0, 0)                      |
//! | 28     | checksum-2         |                                                           |
//!
//! Each frame is a 24-byte header followed by one database page:
//!
//! | offset | field              | notes                                                     |
//! |--------|--------------------|-----------------------------------------------------------|
//! | 0      | page number        | 0 is never valid                                          |
//! | 4      | commit size        | database size in pages after this commit; 0 unless a commit frame |
//! | 8      | salt-1             | copy of the header's salts when written in this generation |
//! | 12     | salt-2             |                                                           |
//! | 16     | checksum-1         | over frame bytes 0..8 and the page, seeded with the previous frame's checksum (frame 1: the header's) |
//! | 20     | checksum-2         |                                                           |
//!
//! The checksum reads its input as pairs of u32 words
//! `(x0, x1)` in the byte order the magic names and updates `s0 += x0 + s1;
//! s1 += x1 + s0` with wrapping arithmetic. Salts are not covered by it.
//!
//! From the database file only the page size is read (header offset 16, a
//! big-endian u16 where 1 means 65536), to check that a rebuild fits the database.
//!
//! # Generations
//!
//! After a checkpoint, the next writer restarts the log from frame 1 with new salts
//! and does not truncate the file, so frames of an older generation may follow the
//! current generation's frames. They carry other salts and are never damage.

// Defines an on-disk layout (SQLite's WAL format, read without SQLite); see clippy.toml.
#![allow(clippy::disallowed_methods)]

use std::collections::BTreeMap;

/// Length of the WAL header.
const HEADER_LEN: usize = 32;
/// Length of a frame header.
const FRAME_HEADER_LEN: usize = 24;
/// Magic with little-endian checksum words; `| 1` gives the big-endian one.
const MAGIC_LE: u32 = 0x377f_0682;
/// The only WAL format version there is.
const FORMAT_VERSION: u32 = 3_007_000;

/// The WAL header, once it has passed every check SQLite makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalHeader {
    /// Checksum words are read big-endian (magic 0x377f0683) rather than little-endian.
    pub big_endian_checksums: bool,
    /// Database page size, and so the size of every frame's page.
    pub page_size: u32,
    /// Checkpoint sequence number.
    pub checkpoint_seq: u32,
    /// Salt-1 and salt-2: frames of the current generation carry the same pair.
    pub salt: (u32, u32),
    /// The header's stored checksum, which seeds frame 1's.
    pub checksum: (u32, u32),
}

/// How the frames were read: from a valid header, or inferred when it is damaged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Generation {
    /// Page size used to lay out frames.
    pub page_size: u32,
    /// Salts that mark a frame of the current generation.
    pub salt: (u32, u32),
    /// Checksum words read big-endian.
    pub big_endian_checksums: bool,
    /// True when the header was unusable and these were inferred from the frames
    /// (salts from frame 1, page size from the database, byte order by trial).
    pub inferred: bool,
}

/// One whole frame slot of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameInfo {
    /// 1-based frame number.
    pub index: usize,
    /// Byte offset of the frame header in the file.
    pub offset: u64,
    /// Database page number the frame holds (0 is invalid).
    pub page: u32,
    /// Database size in pages after this commit; 0 if not a commit frame.
    pub commit_pages: u32,
    /// The frame's salts equal the current generation's.
    pub salt_matches: bool,
    /// SQLite's recovery accepts this frame: header valid and every frame up to and
    /// including this one has a non-zero page number, matching salts and a matching
    /// cumulative checksum. (Whether SQLite *keeps* it also needs a later commit.)
    pub chained_ok: bool,
    /// The checksum verifies seeded with the previous frame's stored checksum
    /// (frame 1: the header's stored checksum), whatever state that frame is in.
    pub self_ok: bool,
    /// The page number, commit size and page data are vouched for by a checksum:
    /// `self_ok`, or only a stored checksum field nearby is damaged (this frame
    /// verifies seeded with the previous frame's recomputed checksum, or the next frame
    /// verifies seeded with this frame's recomputed checksum).
    pub data_ok: bool,
}

impl FrameInfo {
    /// A frame of the current generation that verifies on its own.
    pub fn intact(&self) -> bool {
        self.salt_matches && self.self_ok && self.page != 0
    }
}

/// Intact frames exist beyond the point where SQLite's recovery stops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// The WAL header itself is unusable, so SQLite ignores the whole log. (Should a
    /// header ever be torn while the log restarts, the frames behind it belong to a
    /// generation already checkpointed: reported all the same, and a rebuild from
    /// them is then harmless.)
    pub header_damaged: bool,
    /// First frame SQLite rejects (1 when the header is damaged).
    pub first_bad_frame: usize,
    /// Frames from `first_bad_frame` to the last intact frame that are not intact.
    pub bad_frames: Vec<usize>,
    /// Intact frames at or after `first_bad_frame`: SQLite drops all of them.
    pub later_intact_frames: usize,
    /// Intact commit frames at or after `first_bad_frame`: commits SQLite drops
    /// (at least 1).
    pub later_commits: usize,
    /// Last intact commit frame: where [`WalAnalysis::latest_pages`] stops.
    pub last_intact_commit_frame: usize,
    /// Pages whose copy in a rebuild would come from a frame that no checksum vouches
    /// for (not [`FrameInfo::data_ok`]); empty means the rebuild is exactly the data
    /// SQLite wrote.
    pub unverified_pages: Vec<u32>,
    /// One English sentence for an operator.
    pub summary: String,
}

/// Everything [`analyze`] learnt about a WAL file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalAnalysis {
    /// Length of the file in bytes.
    pub file_len: u64,
    /// The header, or why SQLite would find it unusable (too short, bad magic,
    /// version, page size or checksum).
    pub header: Result<WalHeader, String>,
    /// How frames were laid out and recognised; `None` when no layout fits.
    pub generation: Option<Generation>,
    /// Every whole frame slot in the file.
    pub frames: Vec<FrameInfo>,
    /// Frames SQLite's recovery keeps (up to its last valid commit); 0 if the header is bad.
    pub sqlite_frames: usize,
    /// Commits among `sqlite_frames`.
    pub sqlite_commits: usize,
    /// `Some` exactly when intact frames of the current generation, among them at
    /// least one commit frame, lie beyond where SQLite's recovery stops: committed
    /// data SQLite would silently drop. A torn tail, a short or empty file, older
    /// generations' frames, and the uncommitted frames a rolled-back transaction
    /// leaves behind (they verify among themselves but hold no commit) are not damage.
    pub damage: Option<Damage>,
}

/// Reads a big-endian u32 at `off`, `None` past the end.
fn be32(b: &[u8], off: usize) -> Option<u32> {
    let bytes = b.get(off..off.checked_add(4)?)?;
    Some(u32::from_be_bytes(bytes.try_into().ok()?))
}

/// A page size SQLite could have written.
fn sane_page_size(size: u32) -> bool {
    size.is_power_of_two() && (512..=65536).contains(&size)
}

/// The WAL checksum over `parts`, each a multiple of 8 bytes long.
fn checksum(big_endian: bool, seed: (u32, u32), parts: &[&[u8]]) -> (u32, u32) {
    let (mut s0, mut s1) = seed;
    for part in parts {
        for pair in part.chunks_exact(8) {
            let word = |b: &[u8]| {
                let a: [u8; 4] = b.try_into().unwrap_or([0; 4]);
                if big_endian {
                    u32::from_be_bytes(a)
                } else {
                    u32::from_le_bytes(a)
                }
            };
            s0 = s0.wrapping_add(word(&pair[..4])).wrapping_add(s1);
            s1 = s1.wrapping_add(word(&pair[4..])).wrapping_add(s0);
        }
    }
    (s0, s1)
}

/// Checksum of one whole frame (header bytes 0..8 and the page), seeded with `seed`.
fn frame_checksum(big_endian: bool, seed: (u32, u32), frame: &[u8]) -> (u32, u32) {
    let head = frame.get(..8).unwrap_or(&[]);
    let page = frame.get(FRAME_HEADER_LEN..).unwrap_or(&[]);
    checksum(big_endian, seed, &[head, page])
}

/// The header's fields as stored, valid or not.
struct RawHeader {
    magic: u32,
    version: u32,
    page_size: u32,
    checkpoint_seq: u32,
    salt: (u32, u32),
    checksum: (u32, u32),
}

impl RawHeader {
    /// `None` when the file is shorter than a header.
    fn read(wal: &[u8]) -> Option<Self> {
        let f = |i: usize| be32(wal, i * 4);
        Some(Self {
            magic: f(0)?,
            version: f(1)?,
            page_size: f(2)?,
            checkpoint_seq: f(3)?,
            salt: (f(4)?, f(5)?),
            checksum: (f(6)?, f(7)?),
        })
    }

    /// The checks SQLite makes before it trusts a WAL header.
    fn validate(&self, wal: &[u8]) -> Result<WalHeader, String> {
        if self.magic & !1 != MAGIC_LE {
            return Err(format!("bad magic {:#010x}", self.magic));
        }
        if self.version != FORMAT_VERSION {
            return Err(format!("unknown format version {}", self.version));
        }
        if !sane_page_size(self.page_size) {
            return Err(format!("impossible page size {}", self.page_size));
        }
        let big_endian = self.magic & 1 == 1;
        let body = wal.get(..24).unwrap_or(&[]);
        if checksum(big_endian, (0, 0), &[body]) != self.checksum {
            return Err("header checksum mismatch".to_string());
        }
        Ok(WalHeader {
            big_endian_checksums: big_endian,
            page_size: self.page_size,
            checkpoint_seq: self.checkpoint_seq,
            salt: self.salt,
            checksum: self.checksum,
        })
    }
}

/// How to read frames: page size, byte order, generation salts, frame-1 seed.
#[derive(Clone, Copy)]
struct Layout {
    page_size: u32,
    big_endian: bool,
    salt: (u32, u32),
    seed: (u32, u32),
    header_ok: bool,
}

impl Layout {
    fn frame_len(&self) -> usize {
        FRAME_HEADER_LEN + self.page_size as usize
    }

    /// Bytes of frame `i` (0-based), header included.
    fn frame<'a>(&self, wal: &'a [u8], i: usize) -> Option<&'a [u8]> {
        let start = i.checked_mul(self.frame_len())?.checked_add(HEADER_LEN)?;
        wal.get(start..start.checked_add(self.frame_len())?)
    }
}

/// Reads every whole frame slot under `lay`.
fn scan_frames(wal: &[u8], lay: &Layout) -> Vec<FrameInfo> {
    let slots = wal.len().saturating_sub(HEADER_LEN) / lay.frame_len();
    let mut frames = Vec::with_capacity(slots);
    let mut recomputed = Vec::with_capacity(slots);
    let mut seed = lay.seed;
    let mut chain = lay.header_ok;
    for i in 0..slots {
        let Some(bytes) = lay.frame(wal, i) else {
            break;
        };
        let f = |w: usize| be32(bytes, w * 4).unwrap_or(0);
        let stored = (f(4), f(5));
        let sum = frame_checksum(lay.big_endian, seed, bytes);
        let self_ok = sum == stored;
        let salt_matches = (f(2), f(3)) == lay.salt;
        chain = chain && self_ok && salt_matches && f(0) != 0;
        frames.push(FrameInfo {
            index: i + 1,
            offset: (HEADER_LEN + i * lay.frame_len()) as u64,
            page: f(0),
            commit_pages: f(1),
            salt_matches,
            chained_ok: chain,
            self_ok,
            data_ok: self_ok,
        });
        recomputed.push(sum);
        seed = stored;
    }
    mark_data_ok(wal, lay, &mut frames, &recomputed);
    frames
}

/// Sets `data_ok` on frames that fail only because a stored checksum field nearby is
/// damaged: recomputing across the damaged field makes the chain verify again.
fn mark_data_ok(wal: &[u8], lay: &Layout, frames: &mut [FrameInfo], recomputed: &[(u32, u32)]) {
    let verifies = |i: usize, seed: (u32, u32)| match lay.frame(wal, i) {
        Some(bytes) => {
            let stored = (be32(bytes, 16).unwrap_or(0), be32(bytes, 20).unwrap_or(0));
            frame_checksum(lay.big_endian, seed, bytes) == stored
        }
        None => false,
    };
    for i in 0..frames.len() {
        if frames[i].self_ok {
            continue;
        }
        let from_previous = i > 0 && verifies(i, recomputed[i - 1]);
        let from_next = i + 1 < frames.len() && verifies(i + 1, recomputed[i]);
        frames[i].data_ok = from_previous || from_next;
    }
}

/// Layout candidates for a damaged header, most plausible first: the database's
/// page size if given (it must equal the log's), else the header's if sane, else
/// every legal size; each with the magic's byte order first.
fn layout_candidates(raw: &RawHeader, db_page_size: Option<u32>) -> Vec<(u32, bool, bool)> {
    let sizes: Vec<(u32, bool)> = match db_page_size.filter(|s| sane_page_size(*s)) {
        Some(size) => vec![(size, true)],
        None => {
            let given = Some(raw.page_size).filter(|s| sane_page_size(*s));
            let all = (9..=16).map(|b| 1u32 << b).filter(|s| Some(*s) != given);
            given
                .map(|s| (s, true))
                .into_iter()
                .chain(all.map(|s| (s, false)))
                .collect()
        }
    };
    // A garbage magic says nothing; big-endian is then tried first.
    let magic_be = raw.magic & !1 != MAGIC_LE || raw.magic & 1 == 1;
    let orders = [magic_be, !magic_be];
    let pairs = sizes
        .iter()
        .flat_map(|&(s, given)| orders.map(|be| (s, be, given)));
    pairs.collect()
}

/// Infers a layout when the header is unusable: salts from frame 1, and the page
/// size and byte order under which most frames verify on their own.
fn infer_layout(wal: &[u8], raw: &RawHeader, db_page_size: Option<u32>) -> Option<Layout> {
    let salt = (be32(wal, HEADER_LEN + 8)?, be32(wal, HEADER_LEN + 12)?);
    let mut best: Option<(usize, Layout)> = None;
    for (page_size, big_endian, given) in layout_candidates(raw, db_page_size) {
        let seed = raw.checksum;
        let lay = Layout {
            page_size,
            big_endian,
            salt,
            seed,
            header_ok: false,
        };
        let score = scan_frames(wal, &lay).iter().filter(|f| f.intact()).count();
        let better = match &best {
            Some((s, _)) => score > *s,
            None => given || score > 0,
        };
        if better {
            best = Some((score, lay));
        }
    }
    best.map(|(_, lay)| lay)
}

/// Analyses a WAL file. `db_page_size` (read from the database file's header, see
/// [`db_page_size`]) is needed only to read frames behind a damaged header.
pub fn analyze(wal: &[u8], db_page_size: Option<u32>) -> WalAnalysis {
    let raw = RawHeader::read(wal);
    let header = match &raw {
        Some(r) => r.validate(wal),
        None => Err(format!(
            "{} bytes, shorter than the 32-byte header",
            wal.len()
        )),
    };
    let layout = match (&header, &raw) {
        (Ok(h), _) => Some(Layout {
            page_size: h.page_size,
            big_endian: h.big_endian_checksums,
            salt: h.salt,
            seed: h.checksum,
            header_ok: true,
        }),
        (Err(_), Some(r)) => infer_layout(wal, r, db_page_size),
        (Err(_), None) => None,
    };
    let frames = layout.map(|l| scan_frames(wal, &l)).unwrap_or_default();
    let (sqlite_frames, sqlite_commits) = sqlite_view(&frames);
    let mut analysis = WalAnalysis {
        file_len: wal.len() as u64,
        generation: layout.map(|l| Generation {
            page_size: l.page_size,
            salt: l.salt,
            big_endian_checksums: l.big_endian,
            inferred: !l.header_ok,
        }),
        header,
        frames,
        sqlite_frames,
        sqlite_commits,
        damage: None,
    };
    analysis.damage = find_damage(&analysis);
    analysis
}

/// What SQLite's recovery keeps: frames up to the last commit of the valid run.
fn sqlite_view(frames: &[FrameInfo]) -> (usize, usize) {
    let (mut kept, mut commits, mut seen) = (0, 0, 0);
    for f in frames.iter().take_while(|f| f.chained_ok) {
        seen += 1;
        if f.commit_pages != 0 {
            kept = seen;
            commits += 1;
        }
    }
    (kept, commits)
}

/// Builds [`Damage`] when intact frames lie beyond where SQLite stops.
fn find_damage(a: &WalAnalysis) -> Option<Damage> {
    let header_damaged = a.header.is_err();
    let first_bad = if header_damaged {
        1
    } else {
        a.frames.iter().find(|f| !f.chained_ok)?.index
    };
    let after = a.frames.get(first_bad - 1..)?;
    let intact: Vec<&FrameInfo> = after.iter().filter(|f| f.intact()).collect();
    let later_commits = intact.iter().filter(|f| f.commit_pages != 0).count();
    if later_commits == 0 {
        // Nothing committed is lost beyond the failing frame's own transaction, and
        // a transaction that spilled to the log and rolled back leaves exactly this
        // behind: uncommitted frames that verify among themselves.
        return None;
    }
    let last_intact = intact.last()?.index;
    let bad_frames = after
        .iter()
        .take_while(|f| f.index <= last_intact)
        .filter(|f| !f.intact())
        .map(|f| f.index)
        .collect();
    let unverified_pages = a
        .latest_pages()
        .into_iter()
        .filter(|&(_, i)| a.frames.get(i - 1).is_some_and(|f| !f.data_ok))
        .map(|(page, _)| page)
        .collect();
    let mut d = Damage {
        header_damaged,
        first_bad_frame: first_bad,
        bad_frames,
        later_intact_frames: intact.len(),
        later_commits,
        last_intact_commit_frame: a.last_intact_commit().unwrap_or(0),
        unverified_pages,
        summary: String::new(),
    };
    d.summary = summarize(a, &d);
    Some(d)
}

/// The operator's sentence.
fn summarize(a: &WalAnalysis, d: &Damage) -> String {
    let lost = format!(
        "silently drop {} commit(s) held in {} frame(s) that still verify",
        d.later_commits, d.later_intact_frames
    );
    let caveat = match d.unverified_pages.len() {
        0 => String::new(),
        n => {
            format!(", though a rebuild would take {n} page(s) from frames no checksum vouches for")
        }
    };
    if let Err(why) = &a.header {
        return format!(
            "The WAL header is unusable ({why}), so SQLite would ignore the whole log and {lost}{caveat}."
        );
    }
    let why = match a.frames.get(d.first_bad_frame - 1) {
        Some(f) if f.page == 0 => "has page number 0",
        Some(f) if !f.salt_matches => "carries a wrong salt",
        _ => "fails its checksum",
    };
    format!(
        "WAL frame {} of {} {why}: SQLite would keep only {} frame(s) ({} commit(s)) and {lost}{caveat}.",
        d.first_bad_frame,
        a.frames.len(),
        a.sqlite_frames,
        a.sqlite_commits
    )
}

impl WalAnalysis {
    /// Index of the last commit frame that is intact (verifies on its own, current salts).
    fn last_intact_commit(&self) -> Option<usize> {
        let last = self
            .frames
            .iter()
            .rev()
            .find(|f| f.intact() && f.commit_pages != 0);
        last.map(|f| f.index)
    }

    /// Database size in pages after the commit [`latest_pages`](Self::latest_pages)
    /// stops at; `None` when no commit frame is intact.
    pub fn rebuilt_page_count(&self) -> Option<u32> {
        let i = self.last_intact_commit()?;
        self.frames.get(i - 1).map(|f| f.commit_pages)
    }

    /// Page number → index of the frame holding its latest copy, over every frame up
    /// to the last intact commit frame (which may lie beyond SQLite's stopping point).
    ///
    /// This deliberately INCLUDES frames in between that are damaged or carry the
    /// wrong salt: they belong to the transactions being recovered, and leaving them
    /// out would mix pages of different commits. Their data (and even their page
    /// number) may be wrong; [`Damage::unverified_pages`] lists the pages whose copy
    /// comes from such a frame, and the caller decides (for example by running
    /// `PRAGMA integrity_check` on the rebuild). Pages beyond the commit's database
    /// size are left out.
    pub fn latest_pages(&self) -> BTreeMap<u32, usize> {
        let mut map = BTreeMap::new();
        let (Some(last), Some(size)) = (self.last_intact_commit(), self.rebuilt_page_count())
        else {
            return map;
        };
        for f in self.frames.iter().take(last) {
            if f.page != 0 && f.page <= size {
                map.insert(f.page, f.index);
            }
        }
        map
    }

    /// The page stored in frame `index` (1-based) of `wal`, the file this analysis read.
    pub fn frame_page<'a>(&self, wal: &'a [u8], index: usize) -> Option<&'a [u8]> {
        let generation = self.generation.as_ref()?;
        let frame = self.frames.get(index.checked_sub(1)?)?;
        let start = usize::try_from(frame.offset)
            .ok()?
            .checked_add(FRAME_HEADER_LEN)?;
        wal.get(start..start.checked_add(generation.page_size as usize)?)
    }

    /// The pages of [`latest_pages`](Self::latest_pages), copied out of `wal`: an
    /// overlay to read the database through without writing a rebuild.
    pub fn overlay(&self, wal: &[u8]) -> BTreeMap<u32, Vec<u8>> {
        let pages = self.latest_pages().into_iter();
        pages
            .filter_map(|(page, i)| Some((page, self.frame_page(wal, i)?.to_vec())))
            .collect()
    }
}

/// Page size from a database file's header: `None` if the file is too short, lacks
/// the "SQLite format 3" magic or names an impossible size.
pub fn db_page_size(db: &[u8]) -> Option<u32> {
    if db.get(..16)? != b"SQLite format 3\0" {
        return None;
    }
    let raw = u16::from_be_bytes(db.get(16..18)?.try_into().ok()?);
    let size = if raw == 1 { 65536 } else { u32::from(raw) };
    Some(size).filter(|s| sane_page_size(*s))
}

/// The database image with the frames of [`WalAnalysis::latest_pages`] applied and its
/// length set to the last intact commit's size. Without an intact commit, `db` comes
/// back unchanged.
///
/// Works in memory: the result is as large as the database, which llmfs's stores are
/// small enough for. The size is bounded by the inputs (`db` pages plus one page per
/// frame), so a forged commit size cannot make it allocate without limit.
pub fn rebuild(db: &[u8], wal: &[u8], analysis: &WalAnalysis) -> Result<Vec<u8>, String> {
    let (Some(generation), Some(pages)) = (&analysis.generation, analysis.rebuilt_page_count())
    else {
        return Ok(db.to_vec());
    };
    let size = generation.page_size as usize;
    if let Some(db_size) = db_page_size(db).filter(|s| *s != generation.page_size) {
        return Err(format!(
            "database page size {db_size} but WAL page size {}",
            generation.page_size
        ));
    }
    // Every page of the result is in the database file or in a frame, and the
    // never-written lock-byte page may add one more.
    let limit = db.len().div_ceil(size) + analysis.frames.len() + 1;
    if pages as usize > limit {
        return Err(format!(
            "commit size of {pages} pages exceeds the {limit} the files can hold"
        ));
    }
    let len = pages as usize * size;
    let mut out = db.get(..len.min(db.len())).unwrap_or(&[]).to_vec();
    out.resize(len, 0);
    for (page, index) in analysis.latest_pages() {
        let data = analysis
            .frame_page(wal, index)
            .ok_or_else(|| format!("frame {index} lies outside the WAL given"))?;
        let start = (page as usize - 1) * size;
        let slot = out
            .get_mut(start..start + size)
            .ok_or("page beyond the commit size")?;
        slot.copy_from_slice(data);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::Connection;
    use std::collections::BTreeSet;
    use std::path::Path;

    const PAGE: u32 = 8192;
    /// Rows every fixture commits, one commit each.
    const ROWS: usize = 300;

    /// Fixed-seed xorshift64: reproducible "random" bytes without a dependency.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n.max(1)
        }
        fn bytes(&mut self, n: usize) -> Vec<u8> {
            (0..n).map(|_| self.next() as u8).collect()
        }
    }

    fn key(i: usize) -> Vec<u8> {
        format!("key/{i:05}").into_bytes()
    }

    /// Mostly small values, every 25th one spilling onto overflow pages.
    fn value(i: usize) -> Vec<u8> {
        let len = if i % 25 == 7 {
            20_000
        } else {
            40 + (i * 37) % 900
        };
        Rng(i as u64 + 1).bytes(len)
    }

    fn expected(n: usize) -> BTreeSet<(Vec<u8>, Vec<u8>)> {
        (0..n).map(|i| (key(i), value(i))).collect()
    }

    /// Opens (or creates) a store with llmfs's pragmas and never checkpoints by itself.
    fn open(path: &Path) -> Connection {
        let conn = Connection::open(path).unwrap();
        conn.execute_batch("PRAGMA page_size=8192; PRAGMA auto_vacuum=INCREMENTAL;")
            .unwrap();
        let mode: String = conn
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        conn.execute_batch(
            "PRAGMA wal_autocheckpoint=0;
             CREATE TABLE IF NOT EXISTS records(k BLOB PRIMARY KEY, v BLOB NOT NULL) WITHOUT ROWID;",
        )
        .unwrap();
        conn
    }

    fn insert(conn: &Connection, range: std::ops::Range<usize>) {
        for i in range {
            let sql = "INSERT INTO records(k, v) VALUES (?1, ?2)";
            conn.execute(sql, (key(i), value(i))).unwrap();
        }
    }

    /// Copies of the database and its WAL, taken while `conn` still holds them open,
    /// so nothing has been checkpointed away.
    fn snapshot(dir: &Path, conn: &Connection) -> (Vec<u8>, Vec<u8>) {
        let _ = conn; // the connection must outlive the copy
        let db = std::fs::read(dir.join("t.db")).unwrap();
        let wal = std::fs::read(dir.join("t.db-wal")).unwrap();
        (db, wal)
    }

    /// A store with ROWS single-row commits, copied mid-life.
    fn fixture() -> (Vec<u8>, Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        let conn = open(&dir.path().join("t.db"));
        insert(&conn, 0..ROWS);
        snapshot(dir.path(), &conn)
    }

    /// What SQLite itself reads from these files: the rows, or an error.
    fn sqlite_rows(
        db: &[u8],
        wal: Option<&[u8]>,
    ) -> rusqlite::Result<BTreeSet<(Vec<u8>, Vec<u8>)>> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("c.db"), db).unwrap();
        if let Some(wal) = wal {
            std::fs::write(dir.path().join("c.db-wal"), wal).unwrap();
        }
        let conn = Connection::open(dir.path().join("c.db"))?;
        let ok: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
        assert_eq!(ok, "ok");
        let mut stmt = conn.prepare("SELECT k, v FROM records")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.collect()
    }

    fn frame_len() -> usize {
        FRAME_HEADER_LEN + PAGE as usize
    }

    /// A frame in the middle third whose page a later frame writes again.
    fn superseded_frame(a: &WalAnalysis) -> &FrameInfo {
        let n = a.frames.len();
        let later = |f: &FrameInfo| a.frames[f.index..].iter().any(|g| g.page == f.page);
        a.frames[n / 3..2 * n / 3]
            .iter()
            .find(|f| later(f))
            .unwrap()
    }

    /// Commits SQLite loses when it stops before frame `k`.
    fn commits_from(a: &WalAnalysis, k: usize) -> usize {
        a.frames[k - 1..]
            .iter()
            .filter(|f| f.commit_pages != 0)
            .count()
    }

    #[test]
    fn intact_wal_has_no_damage_and_rebuilds() {
        let (db, wal) = fixture();
        let a = analyze(&wal, db_page_size(&db));
        let h = a.header.as_ref().unwrap();
        assert_eq!(h.page_size, PAGE);
        assert!(a.damage.is_none());
        assert_eq!(a.frames.len(), (wal.len() - HEADER_LEN) / frame_len());
        assert!(a
            .frames
            .iter()
            .all(|f| f.chained_ok && f.self_ok && f.data_ok));
        assert_eq!(a.sqlite_frames, a.frames.len());
        let commits = a.frames.iter().filter(|f| f.commit_pages != 0).count();
        assert_eq!(a.sqlite_commits, commits);
        // One commit per insert, plus the schema's.
        assert!(commits > ROWS);
        assert_eq!(sqlite_rows(&db, Some(&wal)).unwrap(), expected(ROWS));

        let rebuilt = rebuild(&db, &wal, &a).unwrap();
        let pages = a.rebuilt_page_count().unwrap() as usize;
        assert_eq!(rebuilt.len(), pages * PAGE as usize);
        assert_eq!(sqlite_rows(&rebuilt, None).unwrap(), expected(ROWS));
        assert_eq!(a.overlay(&wal).len(), a.latest_pages().len());
    }

    #[test]
    fn flipped_page_bit_is_found_and_rebuild_keeps_later_commits() {
        let (db, wal) = fixture();
        let clean = analyze(&wal, Some(PAGE));
        let k = superseded_frame(&clean).index;
        let mut bad = wal.clone();
        bad[HEADER_LEN + (k - 1) * frame_len() + FRAME_HEADER_LEN + 1000] ^= 0x10;

        let a = analyze(&bad, Some(PAGE));
        let d = a.damage.as_ref().expect("damage");
        assert!(!d.header_damaged);
        assert_eq!(d.first_bad_frame, k);
        assert_eq!(d.bad_frames, vec![k]);
        assert!(!a.frames[k - 1].data_ok);
        assert_eq!(d.later_intact_frames, a.frames.len() - k);
        assert_eq!(d.later_commits, commits_from(&clean, k + 1));
        assert_eq!(d.last_intact_commit_frame, a.frames.len());
        assert!(
            d.unverified_pages.is_empty(),
            "frame {k}'s page is written again later"
        );
        assert!(a.sqlite_frames < k);
        assert!(d.summary.contains(&format!("frame {k} ")), "{}", d.summary);

        // SQLite really drops every commit from frame k on, without an error...
        let lost = commits_from(&clean, k);
        assert!(lost > 0);
        let seen = sqlite_rows(&db, Some(&bad)).unwrap();
        assert_eq!(seen, expected(ROWS - lost));
        // ...while the rebuild keeps all of them.
        let rebuilt = rebuild(&db, &bad, &a).unwrap();
        assert_eq!(sqlite_rows(&rebuilt, None).unwrap(), expected(ROWS));
    }

    #[test]
    fn flipped_bit_in_a_page_not_written_again_is_flagged_unverified() {
        let (_db, wal) = fixture();
        let clean = analyze(&wal, Some(PAGE));
        let n = clean.frames.len();
        let last = |f: &FrameInfo| !clean.frames[f.index..].iter().any(|g| g.page == f.page);
        let f = clean.frames[n / 3..2 * n / 3]
            .iter()
            .find(|f| last(f))
            .unwrap();
        let mut bad = wal.clone();
        bad[f.offset as usize + FRAME_HEADER_LEN + 7] ^= 1;
        let a = analyze(&bad, Some(PAGE));
        let d = a.damage.unwrap();
        assert_eq!(d.unverified_pages, vec![f.page]);
        assert!(d.summary.contains("no checksum vouches"), "{}", d.summary);
    }

    #[test]
    fn flipped_checksum_field_fails_two_frames_but_data_is_proven() {
        let (db, wal) = fixture();
        let clean = analyze(&wal, Some(PAGE));
        let k = clean.frames.len() / 2;
        let mut bad = wal.clone();
        bad[HEADER_LEN + (k - 1) * frame_len() + 17] ^= 0x04;

        let a = analyze(&bad, Some(PAGE));
        let d = a.damage.as_ref().expect("damage");
        assert_eq!(d.first_bad_frame, k);
        assert_eq!(d.bad_frames, vec![k, k + 1]);
        assert!(!a.frames[k - 1].self_ok && !a.frames[k].self_ok && a.frames[k + 1].self_ok);
        assert!(a.frames[k - 1].data_ok && a.frames[k].data_ok);
        assert!(d.unverified_pages.is_empty());
        assert_eq!(d.later_intact_frames, a.frames.len() - k - 1);
        assert!(sqlite_rows(&db, Some(&bad)).unwrap().len() < ROWS);
        let rebuilt = rebuild(&db, &bad, &a).unwrap();
        assert_eq!(sqlite_rows(&rebuilt, None).unwrap(), expected(ROWS));
    }

    #[test]
    fn flipped_salt_is_found_and_data_kept() {
        let (db, wal) = fixture();
        let clean = analyze(&wal, Some(PAGE));
        let k = clean.frames.len() / 2;
        let mut bad = wal.clone();
        bad[HEADER_LEN + (k - 1) * frame_len() + 9] ^= 0x80;

        let a = analyze(&bad, Some(PAGE));
        let d = a.damage.as_ref().expect("damage");
        assert_eq!(d.first_bad_frame, k);
        assert_eq!(d.bad_frames, vec![k]);
        let f = &a.frames[k - 1];
        assert!(!f.salt_matches && f.self_ok && f.data_ok);
        assert!(d.summary.contains("wrong salt"), "{}", d.summary);
        assert!(d.unverified_pages.is_empty());
        assert!(sqlite_rows(&db, Some(&bad)).unwrap().len() < ROWS);
        let rebuilt = rebuild(&db, &bad, &a).unwrap();
        assert_eq!(sqlite_rows(&rebuilt, None).unwrap(), expected(ROWS));
    }

    #[test]
    fn torn_or_short_tails_are_not_damage() {
        let (_db, wal) = fixture();
        let n = (wal.len() - HEADER_LEN) / frame_len();
        let clean = analyze(&wal, Some(PAGE));
        // Cut in the middle of a frame, and at a frame boundary.
        for cut in [
            HEADER_LEN + (n / 2) * frame_len() + 5000,
            HEADER_LEN + (n - 3) * frame_len(),
        ] {
            let a = analyze(&wal[..cut], Some(PAGE));
            assert!(a.damage.is_none(), "cut at {cut}");
            assert_eq!(a.frames.len(), (cut - HEADER_LEN) / frame_len());
            let last_commit = a.frames.iter().rev().find(|f| f.commit_pages != 0).unwrap();
            assert_eq!(a.sqlite_frames, last_commit.index);
            assert!(a.latest_pages().values().all(|&i| i <= last_commit.index));
            assert_eq!(a.rebuilt_page_count(), Some(last_commit.commit_pages));
            assert!(clean.frames.len() > a.frames.len());
        }
        // The last frames zeroed, as a crash on some filesystems leaves them.
        let mut zeroed = wal.clone();
        let from = HEADER_LEN + (n - 4) * frame_len();
        zeroed[from..].fill(0);
        let a = analyze(&zeroed, Some(PAGE));
        assert!(a.damage.is_none());
        assert!(a.sqlite_frames <= n - 4);
        // A frame of garbage after the log.
        let mut tail = wal.clone();
        tail.extend(Rng(9).bytes(frame_len()));
        assert!(analyze(&tail, Some(PAGE)).damage.is_none());
        // Short and empty files.
        for len in [0, 1, 20, 31, 32, 33, 100] {
            let a = analyze(&wal[..len], Some(PAGE));
            assert!(a.damage.is_none(), "len {len}");
            assert_eq!(a.sqlite_frames, 0);
            assert_eq!(a.header.is_ok(), len >= 32);
        }
    }

    #[test]
    fn garbage_header_is_damage_and_generation_is_inferred() {
        let (db, wal) = fixture();
        let clean = analyze(&wal, Some(PAGE));
        let mut bad = wal.clone();
        bad[..HEADER_LEN].copy_from_slice(&Rng(77).bytes(HEADER_LEN));
        let frame1_salt = (be32(&wal, 40).unwrap(), be32(&wal, 44).unwrap());

        for db_size in [Some(PAGE), None] {
            let a = analyze(&bad, db_size);
            assert!(a.header.is_err());
            assert_eq!(a.sqlite_frames, 0);
            let g = a.generation.unwrap();
            assert!(g.inferred);
            assert_eq!((g.page_size, g.salt), (PAGE, frame1_salt));
            let d = a.damage.as_ref().expect("damage");
            assert!(d.header_damaged);
            assert_eq!(d.first_bad_frame, 1);
            // Frame 1's seed was the overwritten header checksum: it cannot verify.
            assert_eq!(d.bad_frames, vec![1]);
            assert_eq!(d.later_intact_frames, a.frames.len() - 1);
            assert_eq!(d.later_commits, commits_from(&clean, 2));
            assert!(
                d.summary.starts_with("The WAL header is unusable"),
                "{}",
                d.summary
            );
            // Frame 1's page is written again later, so the rebuild is exact.
            assert!(d.unverified_pages.is_empty());
            let rebuilt = rebuild(&db, &bad, &a).unwrap();
            assert_eq!(sqlite_rows(&rebuilt, None).unwrap(), expected(ROWS));
        }
        // SQLite ignores the whole log: the database file alone has no table yet.
        assert!(sqlite_rows(&db, Some(&bad)).map_or(true, |r| r.is_empty()));
    }

    #[test]
    fn older_generation_after_a_restart_is_not_damage() {
        let dir = tempfile::tempdir().unwrap();
        let conn = open(&dir.path().join("t.db"));
        insert(&conn, 0..100);
        let (busy, _, _): (i64, i64, i64) = conn
            .query_row("PRAGMA wal_checkpoint(RESTART)", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .unwrap();
        assert_eq!(busy, 0);
        insert(&conn, 100..110);
        let (db, wal) = snapshot(dir.path(), &conn);

        let a = analyze(&wal, db_page_size(&db));
        assert!(a.damage.is_none());
        assert!(a.header.as_ref().unwrap().checkpoint_seq >= 1);
        assert!(a.sqlite_frames < a.frames.len(), "older frames follow");
        let old = &a.frames[a.sqlite_frames..];
        assert!(old.iter().all(|f| !f.intact()));
        assert!(
            old.iter().any(|f| f.self_ok),
            "older frames still verify among themselves"
        );
        assert_eq!(sqlite_rows(&db, Some(&wal)).unwrap(), expected(110));
        let rebuilt = rebuild(&db, &wal, &a).unwrap();
        assert_eq!(sqlite_rows(&rebuilt, None).unwrap(), expected(110));
    }

    #[test]
    fn rolled_back_spill_leaves_frames_that_are_not_damage() {
        let dir = tempfile::tempdir().unwrap();
        let conn = open(&dir.path().join("t.db"));
        insert(&conn, 0..50);
        // A tiny cache makes a big transaction spill its pages into the log before
        // it rolls back; the next, shorter commits overwrite only the first of them.
        conn.execute_batch("PRAGMA cache_size=10;").unwrap();
        let tx = conn.unchecked_transaction().unwrap();
        for i in 1000..1200 {
            let sql = "INSERT INTO records(k, v) VALUES (?1, ?2)";
            tx.execute(sql, (key(i), Rng(i as u64).bytes(20_000)))
                .unwrap();
        }
        tx.rollback().unwrap();
        insert(&conn, 50..52);
        let (db, wal) = snapshot(dir.path(), &conn);

        let a = analyze(&wal, Some(PAGE));
        let left = a.frames[a.sqlite_frames..].iter().filter(|f| f.intact());
        // Some of them still verify among themselves (others were rewritten in place
        // during the spill, which leaves their successors' checksums stale).
        assert!(left.count() >= 2, "the rolled-back frames are still there");
        assert!(a.damage.is_none());
        assert_eq!(sqlite_rows(&db, Some(&wal)).unwrap(), expected(52));
        let rebuilt = rebuild(&db, &wal, &a).unwrap();
        assert_eq!(sqlite_rows(&rebuilt, None).unwrap(), expected(52));
    }

    /// A WAL header that passes every check, so fuzzed frames get read.
    fn valid_header(rng: &mut Rng, page_size: u32) -> Vec<u8> {
        let big_endian = rng.below(2) == 1;
        let words = [MAGIC_LE | big_endian as u32, FORMAT_VERSION, page_size, 0];
        let mut h: Vec<u8> = words.iter().flat_map(|w| w.to_be_bytes()).collect();
        h.extend(rng.bytes(8));
        let (c1, c2) = checksum(big_endian, (0, 0), &[&h]);
        h.extend(c1.to_be_bytes());
        h.extend(c2.to_be_bytes());
        h
    }

    fn exercise(wal: &[u8], db: &[u8], db_size: Option<u32>) {
        let a = analyze(wal, db_size);
        assert!(a.sqlite_frames <= a.frames.len());
        assert!(a.latest_pages().values().all(|&i| i <= a.frames.len()));
        let _ = a.overlay(wal);
        let _ = rebuild(db, wal, &a);
    }

    #[test]
    fn garbage_never_panics() {
        let mut rng = Rng(0x5eed);
        let db = Rng(3).bytes(3 * 512);
        for _ in 0..400 {
            let page_size = 512 << rng.below(3);
            let frames = rng.below(6) as usize;
            let len = match rng.below(3) {
                0 => rng.below(200) as usize,
                _ => {
                    HEADER_LEN
                        + frames * (FRAME_HEADER_LEN + page_size as usize)
                        + rng.below(3) as usize
                }
            };
            let mut wal = rng.bytes(len);
            if rng.below(2) == 0 && len >= HEADER_LEN {
                wal[..HEADER_LEN].copy_from_slice(&valid_header(&mut rng, page_size));
            }
            let db_size = [None, Some(page_size), Some(rng.next() as u32)][rng.below(3) as usize];
            exercise(&wal, &db, db_size);
        }
        let (db, wal) = fixture();
        for _ in 0..60 {
            let mut bad = wal.clone();
            for _ in 0..=rng.below(3) {
                let at = rng.below(bad.len() as u64) as usize;
                bad[at] ^= 1 << rng.below(8);
            }
            let cut = bad.len() - rng.below(20_000) as usize;
            exercise(&bad[..cut], &db, Some(PAGE));
        }
    }
}
