//! Salvaging records out of an SQLite database image page by page, without SQLite
//! and without trusting the b-tree structure, so that damaged interior pages, a
//! damaged page 1 or a file cut short lose only the records stored on them.
//!
//! This module owns the database file format as far as salvage needs it: the
//! header, b-tree pages and cells, overflow chains, the freelist, the pointer map
//! and the record format. It yields every record of exactly two BLOB columns found
//! on a page in use: llmfs's `records` (a WITHOUT ROWID table, so an index b-tree
//! whose entries are the records) and `frames` (a rowid table) rows. `sqlite_schema`
//! rows (5 columns) and the automatic index on `frames.k` (blob, integer) are left out
//! by that shape alone.
//!
//! # What is scanned
//!
//! Every page, in order, unless it is a pointer-map page, a free page (on the freelist
//! OR marked free in the pointer map: free pages keep stale records, and a deleted file
//! must not come back) or an overflow page (pointer-map type 3/4, or reached through an
//! overflow chain). Leaf pages of both kinds are scanned, and so are interior pages of
//! index b-trees: an index b-tree keeps some entries in its interior cells, and those
//! entries exist nowhere else. A cell whose payload cannot be read whole is counted in
//! [`ScanReport::skipped_cells`] and its page is reported; nothing is guessed.
//!
//! With page 1 unreadable the freelist is unknown and only the pointer map tells free
//! pages apart; a database without a pointer map (no auto-vacuum) would then let stale
//! records on free pages come back. llmfs's stores are `auto_vacuum=INCREMENTAL`.
//!
//! # Layouts read (all integers big-endian)
//!
//! Database header, first 100 bytes of page 1:
//!
//! | offset | size | field                                                          |
//! |--------|------|----------------------------------------------------------------|
//! | 0      | 16   | "SQLite format 3\0"                                            |
//! | 16     | 2    | page size; 1 means 65536                                       |
//! | 20     | 1    | reserved bytes at the end of each page (usable = size − this)  |
//! | 24     | 4    | file change counter                                            |
//! | 28     | 4    | database size in pages; valid only if non-zero and offset 24 equals offset 92 |
//! | 32     | 4    | first freelist trunk page                                      |
//! | 36     | 4    | number of freelist pages (trunks and leaves)                   |
//! | 52     | 4    | largest root page; non-zero iff pointer-map pages exist        |
//! | 92     | 4    | version-valid-for: the change counter the size was written at  |
//!
//! B-tree page header (at offset 100 on page 1, else 0); the cell pointer array of
//! 2-byte page offsets follows it:
//!
//! | offset | size | field                                                          |
//! |--------|------|----------------------------------------------------------------|
//! | 0      | 1    | type: 2 index interior, 5 table interior, 10 index leaf, 13 table leaf |
//! | 3      | 2    | number of cells                                                |
//! | 5      | 2    | start of the cell content area; 0 means 65536                  |
//! | 8      | 4    | right-most child (interior pages only: header is 12 bytes, else 8) |
//!
//! Cells: table leaf = payload size varint, rowid varint, payload; index leaf = payload
//! size varint, payload; index interior = 4-byte left child, payload size varint,
//! payload. With usable size U and payload size P, the part stored on the page is P
//! if P ≤ X, where X = U − 35 for table leaves and ((U − 12)·64/255) − 23 for index
//! pages; otherwise K = M + ((P − M) mod (U − 4)) with M = ((U − 12)·32/255) − 23 if
//! K ≤ X, else M; a 4-byte first overflow page number follows the local part.
//!
//! | page kind      | layout                                                         |
//! |----------------|----------------------------------------------------------------|
//! | overflow       | 4-byte next page (0 on the last), then U − 4 payload bytes     |
//! | freelist trunk | 4-byte next trunk, 4-byte leaf count L, L 4-byte leaf page numbers (L ≤ U/4 − 2) |
//! | pointer map    | U/5 entries of 5 bytes: type, 4-byte parent; entries describe the pages after it |
//!
//! Pointer-map pages sit at page 2 and then every U/5 + 1 pages (moved one page on if
//! that is the lock-byte page, which holds byte offset 2^30 and is never used). Entry
//! types: 1 b-tree root (parent 0), 2 free page (parent 0), 3 first overflow page
//! (parent = the cell's b-tree page), 4 later overflow page (parent = previous overflow
//! page), 5 non-root b-tree page (parent = parent page).
//!
//! Record: header-size varint (counting itself), one serial-type varint per column,
//! then the values. Serial types: 0 NULL, 1–6 integers of 1, 2, 3, 4, 6, 8 bytes, 7
//! float (8), 8 and 9 the constants 0 and 1, 10 and 11 reserved, N ≥ 12 even a BLOB
//! of (N − 12)/2 bytes, N ≥ 13 odd a TEXT of (N − 13)/2 bytes. Varints are 1–9 bytes,
//! 7 bits per byte with the high bit set on all but the last, the 9th byte giving 8 bits.

// Defines an on-disk layout (SQLite's page format, read without SQLite); see clippy.toml.
#![allow(clippy::disallowed_methods)]

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};

/// Start of every SQLite database file.
const MAGIC: &[u8; 16] = b"SQLite format 3\0";
/// Page size used when neither the header nor the caller gives a sane one.
const DEFAULT_PAGE_SIZE: u32 = 8192;
/// The page holding this byte offset is never used (it is where SQLite's locks live).
const LOCK_BYTE_OFFSET: u64 = 0x4000_0000;
/// How far past the file's end the header's database size is believed: a file cut
/// short then shows its missing pages, and a forged size cannot make a scan loop over
/// billions of pages.
const MAX_MISSING_PAGES: u32 = 65_536;
/// SQLite's minimum usable page size; the cell-size formulas need it.
const MIN_USABLE: usize = 480;

/// Pages of a database, wherever they come from.
pub trait PageSource {
    /// Size of every page in bytes.
    fn page_size(&self) -> u32;
    /// Number of pages in the database (the highest page number).
    fn page_count(&self) -> u32;
    /// Page `pgno` (1-based), exactly `page_size` bytes; `None` if it is missing
    /// (for example a file cut short).
    fn page(&self, pgno: u32) -> Option<Cow<'_, [u8]>>;
}

/// A page size SQLite could have written.
fn sane_page_size(size: u32) -> bool {
    size.is_power_of_two() && (512..=65536).contains(&size)
}

fn be16(b: &[u8], off: usize) -> Option<u16> {
    let bytes = b.get(off..off.checked_add(2)?)?;
    Some(u16::from_be_bytes(bytes.try_into().ok()?))
}

fn be32(b: &[u8], off: usize) -> Option<u32> {
    let bytes = b.get(off..off.checked_add(4)?)?;
    Some(u32::from_be_bytes(bytes.try_into().ok()?))
}

/// The fields of the database header that salvage uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbHeader {
    /// Page size in bytes.
    pub page_size: u32,
    /// Bytes reserved at the end of every page.
    pub reserved: u8,
    /// File change counter (offset 24).
    pub change_counter: u32,
    /// Database size in pages as stored (offset 28); see [`DbHeader::valid_page_count`].
    pub page_count: u32,
    /// First freelist trunk page, 0 if none.
    pub freelist_trunk: u32,
    /// Number of freelist pages.
    pub freelist_count: u32,
    /// Largest root b-tree page: non-zero iff the database has pointer-map pages.
    pub largest_root: u32,
    /// Version-valid-for number (offset 92).
    pub version_valid_for: u32,
}

impl DbHeader {
    /// Parses the first 100 bytes of page 1; `Err` says why they are unusable.
    pub fn parse(page1: &[u8]) -> Result<Self, String> {
        if page1.len() < 100 {
            return Err(format!(
                "{} bytes, shorter than the 100-byte header",
                page1.len()
            ));
        }
        if page1.get(..16) != Some(&MAGIC[..]) {
            return Err("no \"SQLite format 3\" magic".to_string());
        }
        let raw = be16(page1, 16).unwrap_or(0);
        let page_size = if raw == 1 { 65536 } else { u32::from(raw) };
        if !sane_page_size(page_size) {
            return Err(format!("impossible page size {page_size}"));
        }
        let f = |off: usize| be32(page1, off).unwrap_or(0);
        Ok(Self {
            page_size,
            reserved: page1.get(20).copied().unwrap_or(0),
            change_counter: f(24),
            page_count: f(28),
            freelist_trunk: f(32),
            freelist_count: f(36),
            largest_root: f(52),
            version_valid_for: f(92),
        })
    }

    /// The database size, when the header vouches for it (non-zero and written at the
    /// current change counter).
    pub fn valid_page_count(&self) -> Option<u32> {
        let valid = self.page_count != 0 && self.change_counter == self.version_valid_for;
        valid.then_some(self.page_count)
    }
}

/// Where a [`FileImage`]'s bytes are: in memory, or read a page at a time from an open
/// file (a store of gigabytes is scanned without being read into memory).
#[derive(Debug)]
enum Bytes {
    Memory(Vec<u8>),
    File { file: std::fs::File, len: u64 },
}

impl Bytes {
    fn len(&self) -> u64 {
        match self {
            Bytes::Memory(v) => v.len() as u64,
            Bytes::File { len, .. } => *len,
        }
    }

    /// `len` bytes at `start`, if the file holds them all.
    fn get(&self, start: u64, len: usize) -> Option<Cow<'_, [u8]>> {
        let end = start.checked_add(len as u64)?;
        if end > self.len() {
            return None;
        }
        match self {
            Bytes::Memory(v) => v
                .get(usize::try_from(start).ok()?..usize::try_from(end).ok()?)
                .map(Cow::Borrowed),
            Bytes::File { file, .. } => {
                use std::os::unix::fs::FileExt;
                let mut buf = vec![0u8; len];
                file.read_exact_at(&mut buf, start).ok()?;
                Some(Cow::Owned(buf))
            }
        }
    }
}

/// A database file's bytes, optionally overlaid with newer pages (from the WAL: see
/// `WalAnalysis::overlay` in the sibling `wal` module).
#[derive(Debug)]
pub struct FileImage {
    data: Bytes,
    overlay: BTreeMap<u32, Vec<u8>>,
    page_size: u32,
    page_count: u32,
}

impl FileImage {
    /// A plain database file. The page size comes from its header if sane, else
    /// `fallback_page_size` (itself replaced by 8192 if not a legal size).
    pub fn new(data: Vec<u8>, fallback_page_size: u32) -> Self {
        Self::with_overlay(data, BTreeMap::new(), fallback_page_size)
    }

    /// A database file whose pages in `overlay` (page number → page) replace the
    /// file's. Overlay pages of the wrong length are ignored. The page count is the
    /// header's (page 1 as overlaid) when it vouches for one within reach of the
    /// file, else the larger of the file's pages and the highest overlay page; set it
    /// with [`FileImage::with_page_count`] when the caller knows better (the WAL's
    /// last commit).
    pub fn with_overlay(
        data: Vec<u8>,
        overlay: BTreeMap<u32, Vec<u8>>,
        fallback_page_size: u32,
    ) -> Self {
        Self::build(Bytes::Memory(data), overlay, fallback_page_size)
    }

    /// [`FileImage::with_overlay`] over an open database file, read a page at a time.
    pub fn from_file(
        file: std::fs::File,
        overlay: BTreeMap<u32, Vec<u8>>,
        fallback_page_size: u32,
    ) -> std::io::Result<Self> {
        let len = file.metadata()?.len();
        Ok(Self::build(
            Bytes::File { file, len },
            overlay,
            fallback_page_size,
        ))
    }

    fn build(data: Bytes, mut overlay: BTreeMap<u32, Vec<u8>>, fallback_page_size: u32) -> Self {
        let size_of = |p: &[u8]| DbHeader::parse(p).ok().map(|h| h.page_size);
        let fallback = Some(fallback_page_size).filter(|s| sane_page_size(*s));
        let first = data.get(0, 100.min(data.len() as usize));
        let page_size = first
            .as_deref()
            .and_then(size_of)
            .or_else(|| overlay.get(&1).and_then(|p| size_of(p)))
            .or(fallback)
            .unwrap_or(DEFAULT_PAGE_SIZE);
        overlay.retain(|&pgno, page| pgno != 0 && page.len() == page_size as usize);
        let mut image = Self {
            data,
            overlay,
            page_size,
            page_count: u32::MAX,
        };
        image.page_count = image.default_page_count();
        image
    }

    /// Sets the number of pages, for example to the size after the WAL's last commit.
    pub fn with_page_count(mut self, pages: u32) -> Self {
        self.page_count = pages;
        self
    }

    /// Pages in the file itself, a partial last page included.
    pub fn file_pages(&self) -> u32 {
        let pages = self.data.len().div_ceil(u64::from(self.page_size));
        u32::try_from(pages).unwrap_or(u32::MAX)
    }

    fn default_page_count(&self) -> u32 {
        let last_overlay = self.overlay.keys().next_back().copied().unwrap_or(0);
        let known = self.file_pages().max(last_overlay);
        let header = self.page(1).and_then(|p| DbHeader::parse(&p).ok());
        match header.and_then(|h| h.valid_page_count()) {
            Some(n) if n <= known.saturating_add(MAX_MISSING_PAGES) => n,
            _ => known,
        }
    }
}

impl PageSource for FileImage {
    fn page_size(&self) -> u32 {
        self.page_size
    }

    fn page_count(&self) -> u32 {
        self.page_count
    }

    fn page(&self, pgno: u32) -> Option<Cow<'_, [u8]>> {
        if pgno == 0 || pgno > self.page_count {
            return None;
        }
        if let Some(page) = self.overlay.get(&pgno) {
            return Some(Cow::Borrowed(page));
        }
        let size = self.page_size as usize;
        let start = u64::from(pgno - 1).checked_mul(size as u64)?;
        self.data.get(start, size)
    }
}

/// What a scan found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanReport {
    /// Pages in the database ([`PageSource::page_count`]).
    pub pages: u32,
    /// B-tree leaf pages scanned.
    pub leaf_pages: u32,
    /// B-tree interior pages (index interior pages are scanned for records too).
    pub interior_pages: u32,
    /// Pages left out as free (freelist or pointer map).
    pub free_pages: u32,
    /// Overflow pages (pointer map or reached through a chain).
    pub overflow_pages: u32,
    /// Pointer-map pages.
    pub ptrmap_pages: u32,
    /// Pages the source could not give.
    pub missing_pages: u32,
    /// Pages of no recognisable kind (each also in `damaged`).
    pub other_pages: u32,
    /// Page number and what is wrong with it; page 1 also carries header and freelist
    /// problems. Runs of missing pages are one entry.
    pub damaged: Vec<(u32, String)>,
    /// Cells on the pages scanned for records.
    pub cells: u64,
    /// Two-BLOB records passed to the visitor.
    pub records: u64,
    /// Cells whose payload or record could not be read whole.
    pub skipped_cells: u64,
}

/// B-tree page kinds, by type byte.
const INDEX_INTERIOR: u8 = 2;
const TABLE_INTERIOR: u8 = 5;
const INDEX_LEAF: u8 = 10;
const TABLE_LEAF: u8 = 13;

/// A pointer-map entry: (type, parent page).
type PtrEntry = (u8, u32);

/// Pointer-map entry types.
const PTR_ROOT: u8 = 1;
const PTR_FREE: u8 = 2;
const PTR_OVERFLOW1: u8 = 3;
const PTR_OVERFLOW2: u8 = 4;
const PTR_BTREE: u8 = 5;

/// Visits every two-BLOB record on the pages of `src` that are in use, as
/// `visit(column 0, column 1)`, and reports what it saw. Never panics: damage is
/// reported, never guessed around.
pub fn scan_records(src: &dyn PageSource, visit: &mut dyn FnMut(&[u8], &[u8])) -> ScanReport {
    if !sane_page_size(src.page_size()) {
        let why = format!("impossible page size {}; nothing scanned", src.page_size());
        let damaged = vec![(0, why)];
        return ScanReport {
            pages: src.page_count(),
            damaged,
            ..ScanReport::default()
        };
    }
    let mut scan = Scanner::new(src);
    let header = scan.read_header();
    scan.find_ptrmap(header.as_ref());
    if let Some(h) = &header {
        scan.walk_freelist(h);
    }
    scan.settle_free_pages(header.is_some());
    for pgno in 1..=scan.pages {
        scan.visit_page(pgno, visit);
    }
    scan.finish()
}

/// State of one scan.
struct Scanner<'a> {
    src: &'a dyn PageSource,
    pages: u32,
    page_size: usize,
    usable: usize,
    lock_page: u32,
    /// Pointer-map entries (type, parent) by page; `has_ptrmap` says whether the
    /// database has a pointer map at all.
    has_ptrmap: bool,
    ptrmap: HashMap<u32, PtrEntry>,
    /// Pages on the freelist, and all pages excluded as free.
    freelist: HashSet<u32>,
    free: HashSet<u32>,
    /// Overflow pages claimed by a whole chain, and those known from the pointer map.
    chained: HashSet<u32>,
    ptrmap_overflow: HashSet<u32>,
    /// Pages of no known kind, settled once all chains are known.
    unknown: Vec<u32>,
    missing_run: Option<(u32, u32)>,
    /// Overflow page reads left: a valid database needs at most one per page, so
    /// this only stops damaged cells from walking the same pages again and again.
    budget: u64,
    report: ScanReport,
}

impl<'a> Scanner<'a> {
    fn new(src: &'a dyn PageSource) -> Self {
        let page_size = src.page_size() as usize;
        let lock = LOCK_BYTE_OFFSET / u64::from(src.page_size().max(1)) + 1;
        Self {
            src,
            pages: src.page_count(),
            page_size,
            usable: page_size,
            lock_page: u32::try_from(lock).unwrap_or(u32::MAX),
            has_ptrmap: false,
            ptrmap: HashMap::new(),
            freelist: HashSet::new(),
            free: HashSet::new(),
            chained: HashSet::new(),
            ptrmap_overflow: HashSet::new(),
            unknown: Vec::new(),
            missing_run: None,
            budget: 4 * u64::from(src.page_count()) + 4096,
            report: ScanReport {
                pages: src.page_count(),
                ..ScanReport::default()
            },
        }
    }

    fn note(&mut self, pgno: u32, why: impl Into<String>) {
        self.report.damaged.push((pgno, why.into()));
    }

    /// A page of the right size, or `None`.
    fn page(&self, pgno: u32) -> Option<Cow<'a, [u8]>> {
        let src = self.src;
        src.page(pgno).filter(|p| p.len() == self.page_size)
    }

    /// A page number that can name a page other than page 1.
    fn in_range(&self, pgno: u32) -> bool {
        pgno >= 2 && pgno <= self.pages && pgno != self.lock_page
    }

    /// Reads the header and the usable size; a damaged header is reported, and the
    /// scan goes on with the source's page size and no reserved bytes.
    fn read_header(&mut self) -> Option<DbHeader> {
        let header = match self.page(1) {
            Some(p) => DbHeader::parse(&p),
            None => Err("page 1 is missing".to_string()),
        };
        let size = self.page_size;
        let header = header.and_then(|h| match h.page_size as usize {
            s if s == size => Ok(h),
            s => Err(format!(
                "it names a page size of {s}, the pages are {size} bytes"
            )),
        });
        let h = match header {
            Ok(h) => h,
            Err(why) => {
                let why = format!("database header unusable ({why}); freelist unknown, pages of {size} bytes assumed");
                self.note(1, why);
                return None;
            }
        };
        match size.checked_sub(usize::from(h.reserved)) {
            Some(usable) if usable >= MIN_USABLE => self.usable = usable,
            _ => self.note(
                1,
                format!(
                    "{} reserved bytes per page is impossible; 0 assumed",
                    h.reserved
                ),
            ),
        }
        Some(h)
    }
}

/// The pointer map and the freelist: which pages are not to be scanned.
impl Scanner<'_> {
    /// Pages described by one pointer-map page, plus the map page itself.
    fn ptrmap_stride(&self) -> u32 {
        (self.usable / 5) as u32 + 1
    }

    /// The pointer-map page whose entries describe `pgno` (≥ 2).
    fn ptrmap_page_for(&self, pgno: u32) -> u32 {
        let stride = self.ptrmap_stride();
        let base = (pgno.saturating_sub(2)) / stride * stride + 2;
        if base == self.lock_page {
            base + 1
        } else {
            base
        }
    }

    fn is_ptrmap_page(&self, pgno: u32) -> bool {
        self.has_ptrmap && pgno >= 2 && self.ptrmap_page_for(pgno) == pgno
    }

    /// Every pointer-map page position up to the database's end.
    fn ptrmap_positions(&self) -> Vec<u32> {
        let (stride, pages) = (u64::from(self.ptrmap_stride()), u64::from(self.pages));
        let mut out = Vec::new();
        let mut base = 2u64;
        while base <= pages {
            let pos = if base == u64::from(self.lock_page) {
                base + 1
            } else {
                base
            };
            if pos <= pages {
                out.push(pos as u32);
            }
            base += stride;
        }
        out
    }

    /// The valid entries of pointer-map page `map` as (page, (type, parent)), and how
    /// many entries are invalid. Only entries for pages within the database are read.
    fn ptrmap_entries(&self, map: u32, page: &[u8]) -> (Vec<(u32, PtrEntry)>, usize) {
        let (mut valid, mut bad) = (Vec::new(), 0);
        let area = page.get(..self.usable).unwrap_or(&[]);
        for (pgno, entry) in (u64::from(map) + 1..).zip(area.chunks_exact(5)) {
            let Ok(pgno) = u32::try_from(pgno) else { break };
            if pgno > self.pages || self.ptrmap_page_for(pgno) != map {
                break;
            }
            let Ok([kind, a, b, c, d]) = <[u8; 5]>::try_from(entry) else {
                break;
            };
            let parent = u32::from_be_bytes([a, b, c, d]);
            let ok = match kind {
                PTR_ROOT | PTR_FREE => parent == 0,
                PTR_OVERFLOW1 | PTR_OVERFLOW2 | PTR_BTREE => (1..=self.pages).contains(&parent),
                _ => false,
            };
            match (pgno == self.lock_page, ok) {
                (true, _) => {}
                (false, true) => valid.push((pgno, (kind, parent))),
                (false, false) => bad += 1,
            }
        }
        (valid, bad)
    }

    /// Decides whether the database has a pointer map (the header says so; without a
    /// header, a pointer map is recognised by its entries) and loads it.
    fn find_ptrmap(&mut self, header: Option<&DbHeader>) {
        let positions = self.ptrmap_positions();
        self.has_ptrmap = match header {
            Some(h) => h.largest_root != 0,
            None => positions.iter().take(3).any(|&map| {
                let page = self.page(map);
                let entries = page.map(|p| self.ptrmap_entries(map, &p));
                entries.is_some_and(|(valid, bad)| bad == 0 && !valid.is_empty())
            }),
        };
        if self.has_ptrmap {
            positions
                .into_iter()
                .for_each(|map| self.load_ptrmap_page(map));
        } else if header.is_none() {
            let why = "no pointer map found either: free pages cannot be told from pages in use, so stale records may come back";
            self.note(1, why);
        }
    }

    /// Takes the entries of one pointer-map page. A page with mostly invalid entries
    /// is garbage, and its few plausible-looking ones are not believed either.
    fn load_ptrmap_page(&mut self, map: u32) {
        let Some(page) = self.page(map) else { return }; // reported as missing
        let (valid, bad) = self.ptrmap_entries(map, &page);
        let total = valid.len() + bad;
        if bad * 2 > total {
            let why = format!(
                "pointer-map page damaged ({bad} of {total} entries invalid); the pages it describes are scanned without it"
            );
            self.note(map, why);
            return;
        }
        if bad > 0 {
            self.note(
                map,
                format!("{bad} of {total} pointer-map entries invalid and ignored"),
            );
        }
        self.ptrmap.extend(valid);
    }

    /// Walks the freelist from the header, with loop protection. A trunk the pointer
    /// map says is in use, or one claiming more leaves than fit, ends the walk: its
    /// leaf list would be garbage and would hide live pages.
    fn walk_freelist(&mut self, h: &DbHeader) {
        let max_leaves = (self.usable / 4 - 2) as u32;
        let mut trunk = h.freelist_trunk;
        let mut seen = HashSet::new();
        while trunk != 0 {
            if let Some(why) = self.freelist_trunk_problem(trunk, &seen) {
                self.note(1, format!("freelist walk stopped: {why}"));
                break;
            }
            let Some(page) = self.page(trunk) else {
                self.note(
                    1,
                    format!("freelist walk stopped: trunk page {trunk} is missing"),
                );
                break;
            };
            let count = be32(&page, 4).unwrap_or(0);
            if count > max_leaves {
                // Not believed to be a trunk at all, so not left out either.
                self.note(trunk, format!("freelist trunk claims {count} leaves, at most {max_leaves} fit; walk stopped"));
                break;
            }
            seen.insert(trunk);
            self.freelist.insert(trunk);
            self.take_freelist_leaves(trunk, &page, count);
            trunk = be32(&page, 0).unwrap_or(0);
        }
        let found = self.freelist.len();
        if found != h.freelist_count as usize {
            let listed = h.freelist_count;
            self.note(
                1,
                format!("header counts {listed} free pages, the freelist walk found {found}"),
            );
        }
    }

    /// Why `trunk` cannot be the next freelist trunk, if it cannot.
    fn freelist_trunk_problem(&self, trunk: u32, seen: &HashSet<u32>) -> Option<String> {
        if !self.in_range(trunk) {
            return Some(format!("trunk page number {trunk} is out of range"));
        }
        if seen.contains(&trunk) {
            return Some(format!("the trunk list loops back to page {trunk}"));
        }
        match self.ptrmap.get(&trunk) {
            Some(&(kind, _)) if kind != PTR_FREE => Some(format!(
                "trunk page {trunk} has pointer-map type {kind}, not free"
            )),
            _ => None,
        }
    }

    fn take_freelist_leaves(&mut self, trunk: u32, page: &[u8], count: u32) {
        let mut bad = 0;
        for i in 0..count as usize {
            match be32(page, 8 + 4 * i) {
                Some(leaf) if self.in_range(leaf) => {
                    self.freelist.insert(leaf);
                }
                _ => bad += 1,
            }
        }
        if bad > 0 {
            self.note(trunk, format!("{bad} freelist leaf numbers out of range"));
        }
    }

    /// Excludes the union of the freelist and the pointer map's free pages, and
    /// reports where the two disagree.
    fn settle_free_pages(&mut self, freelist_known: bool) {
        let marked: Vec<u32> = self
            .ptrmap
            .iter()
            .filter(|(_, &(kind, _))| kind == PTR_FREE)
            .map(|(&pgno, _)| pgno)
            .collect();
        self.free = self.freelist.iter().chain(&marked).copied().collect();
        if !(freelist_known && self.has_ptrmap) {
            return;
        }
        let unlisted: Vec<u32> = marked
            .iter()
            .filter(|p| !self.freelist.contains(p))
            .copied()
            .collect();
        let in_use: Vec<u32> = self
            .freelist
            .iter()
            .filter(|p| {
                self.ptrmap
                    .get(p)
                    .is_some_and(|&(kind, _)| kind != PTR_FREE)
            })
            .copied()
            .collect();
        if let Some(&p) = unlisted.iter().min() {
            let n = unlisted.len();
            self.note(p, format!("{n} page(s) from here on that the pointer map marks free are not on the freelist; left out"));
        }
        if let Some(&p) = in_use.iter().min() {
            let n = in_use.len();
            self.note(p, format!("{n} freelist page(s) from here on that the pointer map says are in use; left out"));
        }
    }
}

/// A b-tree page header that passed its checks.
struct BtreePage {
    kind: u8,
    cells: usize,
    /// Offsets of the cell pointer array's start and end.
    ptr_start: usize,
    ptr_end: usize,
}

impl BtreePage {
    /// `Ok(None)` if the type byte names no b-tree page; `Err` if it does but the
    /// header does not fit the page.
    fn parse(page: &[u8], hdr: usize, usable: usize) -> Result<Option<Self>, String> {
        let Some(&kind) = page.get(hdr) else {
            return Ok(None);
        };
        if ![INDEX_INTERIOR, TABLE_INTERIOR, INDEX_LEAF, TABLE_LEAF].contains(&kind) {
            return Ok(None);
        }
        let interior = kind == INDEX_INTERIOR || kind == TABLE_INTERIOR;
        let cells = usize::from(be16(page, hdr + 3).unwrap_or(0));
        let content = match be16(page, hdr + 5).unwrap_or(0) {
            0 => 65536,
            c => usize::from(c),
        };
        let ptr_start = hdr + if interior { 12 } else { 8 };
        let ptr_end = ptr_start + 2 * cells;
        if ptr_end > usable {
            return Err(format!(
                "b-tree page (type {kind}) claims {cells} cells, more than fit"
            ));
        }
        if content < ptr_end || content > usable {
            return Err(format!(
                "b-tree page (type {kind}) has its cell content area at {content}, outside {ptr_end}..={usable}"
            ));
        }
        Ok(Some(Self {
            kind,
            cells,
            ptr_start,
            ptr_end,
        }))
    }
}

/// Reads a varint at `at`: (value, length in bytes), `None` if it runs off the end.
fn varint(b: &[u8], at: usize) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for i in 0..9 {
        let byte = *b.get(at.checked_add(i)?)?;
        if i == 8 {
            return Some(((value << 8) | u64::from(byte), 9));
        }
        value = (value << 7) | u64::from(byte & 0x7f);
        if byte & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

/// Bytes of a payload of `total` bytes stored on the page itself (the spec's
/// formula; table leaves may keep more on the page than index pages).
fn local_size(total: u64, usable: usize, table_leaf: bool) -> usize {
    let u = usable as u64;
    let max_local = if table_leaf {
        u - 35
    } else {
        (u - 12) * 64 / 255 - 23
    };
    if total <= max_local {
        return total as usize;
    }
    let min_local = (u - 12) * 32 / 255 - 23;
    let k = min_local + (total - min_local) % (u - 4);
    (if k <= max_local { k } else { min_local }) as usize
}

/// Length of a value of serial type `t`; `None` for the reserved types 10 and 11.
fn serial_len(t: u64) -> Option<u64> {
    match t {
        0 | 8 | 9 => Some(0),
        1..=4 => Some(t),
        5 => Some(6),
        6 | 7 => Some(8),
        10 | 11 => None,
        _ => Some((t - 12) / 2),
    }
}

/// The two columns of a two-BLOB record.
type KeyValue<'a> = (&'a [u8], &'a [u8]);

/// The two columns of a record of exactly two BLOBs; `Ok(None)` for any other
/// well-formed record; `Err` if the record is malformed.
fn two_blobs(payload: &[u8]) -> Result<Option<KeyValue<'_>>, String> {
    let (header_len, mut at) = varint(payload, 0).ok_or("record header size unreadable")?;
    let header_len = usize::try_from(header_len).unwrap_or(usize::MAX);
    let header = payload
        .get(..header_len)
        .filter(|_| header_len >= at)
        .ok_or("record header size out of range")?;
    let (mut body, mut columns, mut types) = (0u64, 0usize, [0u64; 2]);
    while at < header_len {
        let (t, n) = varint(header, at).ok_or("serial type runs past the record header")?;
        at += n;
        let len = serial_len(t).ok_or("reserved serial type")?;
        body = body.checked_add(len).ok_or("record length overflows")?;
        if let Some(slot) = types.get_mut(columns) {
            *slot = t;
        }
        columns += 1;
    }
    if header_len as u64 + body != payload.len() as u64 {
        return Err(format!(
            "record of {} bytes in a payload of {}",
            header_len as u64 + body,
            payload.len()
        ));
    }
    let blob = |t: u64| t >= 12 && t & 1 == 0;
    if columns != 2 || !types.iter().all(|&t| blob(t)) {
        return Ok(None);
    }
    let first_len = ((types[0] - 12) / 2) as usize;
    let values = payload.get(header_len..).unwrap_or(&[]);
    Ok(values.get(..first_len).zip(values.get(first_len..)))
}

/// Pages and cells.
impl Scanner<'_> {
    fn missing(&mut self, pgno: u32) {
        self.report.missing_pages += 1;
        match &mut self.missing_run {
            Some((_, last)) if last.checked_add(1) == Some(pgno) => *last = pgno,
            _ => {
                self.flush_missing();
                self.missing_run = Some((pgno, pgno));
            }
        }
    }

    fn flush_missing(&mut self) {
        match self.missing_run.take() {
            Some((a, b)) if a == b => self.note(a, "page missing (file cut short?)"),
            Some((a, b)) => self.note(a, format!("pages {a}..={b} missing (file cut short?)")),
            None => {}
        }
    }

    /// Classifies one page and scans it if it holds records.
    fn visit_page(&mut self, pgno: u32, visit: &mut dyn FnMut(&[u8], &[u8])) {
        if pgno == self.lock_page && pgno != 1 {
            return;
        }
        if self.free.contains(&pgno) {
            self.report.free_pages += 1;
            return;
        }
        let Some(page) = self.page(pgno) else {
            return self.missing(pgno);
        };
        if self.is_ptrmap_page(pgno) {
            self.report.ptrmap_pages += 1;
            return;
        }
        if self.chained.contains(&pgno) {
            return; // an overflow page, counted at the end
        }
        let parsed = BtreePage::parse(&page, if pgno == 1 { 100 } else { 0 }, self.usable);
        let expected = self.ptrmap.get(&pgno).map(|&(kind, _)| kind);
        if matches!(expected, Some(PTR_OVERFLOW1 | PTR_OVERFLOW2)) {
            self.ptrmap_overflow.insert(pgno);
            if !matches!(parsed, Ok(None)) {
                self.note(pgno, "the pointer map says overflow page but it looks like a b-tree page; not scanned");
            }
            return;
        }
        match parsed {
            Ok(Some(btree)) => self.scan_btree(pgno, &page, &btree, visit),
            Ok(None) if matches!(expected, Some(PTR_ROOT | PTR_BTREE)) => {
                self.report.other_pages += 1;
                let kind = page
                    .get(if pgno == 1 { 100 } else { 0 })
                    .copied()
                    .unwrap_or(0);
                self.note(
                    pgno,
                    format!("the pointer map says b-tree page but its type byte is {kind:#04x}"),
                );
            }
            Ok(None) => self.unknown.push(pgno),
            Err(why) => {
                self.report.other_pages += 1;
                self.note(pgno, why);
            }
        }
    }

    /// Visits the records of one b-tree page; table interior pages hold none.
    fn scan_btree(
        &mut self,
        pgno: u32,
        page: &[u8],
        btree: &BtreePage,
        visit: &mut dyn FnMut(&[u8], &[u8]),
    ) {
        match btree.kind {
            INDEX_INTERIOR | TABLE_INTERIOR => self.report.interior_pages += 1,
            _ => self.report.leaf_pages += 1,
        }
        if btree.kind == TABLE_INTERIOR {
            return;
        }
        let (mut skipped, mut first_problem) = (0u64, String::new());
        for i in 0..btree.cells {
            self.report.cells += 1;
            let record = self.read_cell(pgno, page, btree, i);
            match record.as_deref().map_err(|e| e.clone()).and_then(two_blobs) {
                Ok(Some((k, v))) => {
                    visit(k, v);
                    self.report.records += 1;
                }
                Ok(None) => {}
                Err(why) => {
                    if skipped == 0 {
                        first_problem = format!("cell {i}: {why}");
                    }
                    skipped += 1;
                }
            }
        }
        if skipped > 0 {
            self.report.skipped_cells += skipped;
            let cells = btree.cells;
            self.note(
                pgno,
                format!("{skipped} of {cells} cells unreadable; first, {first_problem}"),
            );
        }
    }

    /// The whole payload of cell `i`, following its overflow chain if it has one.
    fn read_cell<'p>(
        &mut self,
        pgno: u32,
        page: &'p [u8],
        btree: &BtreePage,
        i: usize,
    ) -> Result<Cow<'p, [u8]>, String> {
        let offset = usize::from(be16(page, btree.ptr_start + 2 * i).unwrap_or(0));
        if offset < btree.ptr_end || offset >= self.usable {
            return Err(format!(
                "offset {offset} lies outside the cell content area"
            ));
        }
        let cell = page.get(offset..self.usable).unwrap_or(&[]);
        let mut at = if btree.kind == INDEX_INTERIOR { 4 } else { 0 };
        let (total, n) = varint(cell, at).ok_or("payload size runs off the page")?;
        at += n;
        if btree.kind == TABLE_LEAF {
            at += varint(cell, at).ok_or("rowid runs off the page")?.1;
        }
        let local_len = local_size(total, self.usable, btree.kind == TABLE_LEAF);
        let local = cell
            .get(at..at + local_len)
            .ok_or_else(|| format!("{local_len} bytes of local payload overrun the page"))?;
        if local_len as u64 == total {
            return Ok(Cow::Borrowed(local));
        }
        let first = be32(cell, at + local_len).ok_or("overflow page number runs off the page")?;
        self.read_overflow(pgno, total, local, first)
            .map(Cow::Owned)
    }
}

/// Overflow chains.
impl Scanner<'_> {
    /// Reads the rest of a payload from its overflow chain. Every page must be in
    /// range, not free, not a pointer-map page, not used by another chain, agree with
    /// the pointer map if it has an entry, and the chain must end (next page 0)
    /// exactly where the payload does. The chain's pages are claimed only once all of
    /// that holds.
    fn read_overflow(
        &mut self,
        cell_page: u32,
        total: u64,
        local: &[u8],
        first: u32,
    ) -> Result<Vec<u8>, String> {
        let per_page = (self.usable - 4) as u64;
        let rest = total - local.len() as u64;
        let needed = rest.div_ceil(per_page);
        if needed > u64::from(self.pages) {
            return Err(format!(
                "a payload of {total} bytes needs more overflow pages than the database has"
            ));
        }
        let mut out = local.to_vec();
        let mut chain = HashSet::new();
        let (mut parent, mut next) = (cell_page, first);
        for step in 0..needed {
            self.check_overflow_page(next, parent, step == 0, &chain)?;
            if self.budget == 0 {
                return Err("overflow reads exhausted by damaged cells; not followed".to_string());
            }
            self.budget -= 1;
            let page = self
                .page(next)
                .ok_or_else(|| format!("overflow page {next} is missing"))?;
            let take = (rest - step * per_page).min(per_page) as usize;
            out.extend_from_slice(page.get(4..4 + take).ok_or("overflow page too short")?);
            chain.insert(next);
            (parent, next) = (next, be32(&page, 0).unwrap_or(0));
        }
        if next != 0 {
            return Err(format!(
                "the overflow chain goes on past the payload's end, to page {next}"
            ));
        }
        self.chained.extend(chain);
        Ok(out)
    }

    /// Why `pgno` cannot be the next overflow page of a chain, if it cannot.
    fn check_overflow_page(
        &self,
        pgno: u32,
        parent: u32,
        first: bool,
        chain: &HashSet<u32>,
    ) -> Result<(), String> {
        if !self.in_range(pgno) {
            return Err(format!("overflow page number {pgno} is out of range"));
        }
        if self.is_ptrmap_page(pgno) || self.free.contains(&pgno) {
            return Err(format!(
                "overflow page {pgno} is a pointer-map or free page"
            ));
        }
        if self.chained.contains(&pgno) || chain.contains(&pgno) {
            return Err(format!("overflow page {pgno} is already part of a chain"));
        }
        let want = if first { PTR_OVERFLOW1 } else { PTR_OVERFLOW2 };
        match self.ptrmap.get(&pgno) {
            Some(&(kind, from)) if (kind, from) != (want, parent) => Err(format!(
                "the pointer map gives overflow page {pgno} type {kind} parent {from}, not type {want} parent {parent}"
            )),
            _ => Ok(()),
        }
    }

    /// Settles pages of no known kind (those reached by a chain were overflow pages)
    /// and returns the report.
    fn finish(mut self) -> ScanReport {
        self.flush_missing();
        for pgno in std::mem::take(&mut self.unknown) {
            if !self.chained.contains(&pgno) {
                self.report.other_pages += 1;
                self.note(pgno, "not a b-tree, overflow, free or pointer-map page");
            }
        }
        let overflow = self.chained.union(&self.ptrmap_overflow).count();
        self.report.overflow_pages = u32::try_from(overflow).unwrap_or(u32::MAX);
        self.report.damaged.sort_by_key(|(pgno, _)| *pgno);
        self.report
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::Connection;
    use std::collections::BTreeSet;
    use std::path::Path;

    const PAGE: usize = 8192;
    type Rows = BTreeSet<(Vec<u8>, Vec<u8>)>;

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

    /// Value sizes from empty to ~70 KiB; the larger ones spill onto overflow pages.
    const SIZES: [usize; 9] = [0, 3, 60, 700, 2500, 6000, 9000, 25_000, 70_000];

    fn record(i: usize) -> (Vec<u8>, Vec<u8>) {
        (
            format!("rec/{i:05}").into_bytes(),
            Rng(i as u64 + 1).bytes(SIZES[i % 9]),
        )
    }

    fn frame_row(i: usize) -> (Vec<u8>, Vec<u8>) {
        let v = Rng(i as u64 + 100_000).bytes(SIZES[(i * 4 + 1) % 9]);
        (format!("frm/{i:05}").into_bytes(), v)
    }

    /// Opens a store with llmfs's schema and pragmas. secure_delete is off (SQLite's
    /// default, made explicit) so freed pages keep their stale records, as they would
    /// in a real store: the tests need them there.
    fn open(path: &Path) -> Connection {
        let conn = Connection::open(path).unwrap();
        conn.execute_batch(
            "PRAGMA page_size=8192; PRAGMA auto_vacuum=INCREMENTAL; PRAGMA secure_delete=OFF;",
        )
        .unwrap();
        let mode: String = conn
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        conn.execute_batch(
            "PRAGMA wal_autocheckpoint=0;
             CREATE TABLE IF NOT EXISTS records(k BLOB PRIMARY KEY, v BLOB NOT NULL) WITHOUT ROWID;
             CREATE TABLE IF NOT EXISTS frames(k BLOB NOT NULL UNIQUE, v BLOB NOT NULL);",
        )
        .unwrap();
        conn
    }

    /// Inserts rows `range` of both tables, interleaved, in a few transactions.
    fn fill(conn: &Connection, range: std::ops::Range<usize>) {
        for chunk in range.collect::<Vec<_>>().chunks(40) {
            let tx = conn.unchecked_transaction().unwrap();
            for &i in chunk {
                tx.execute("INSERT INTO records VALUES (?1, ?2)", record(i))
                    .unwrap();
                if i % 3 == 0 {
                    tx.execute("INSERT INTO frames(k, v) VALUES (?1, ?2)", frame_row(i))
                        .unwrap();
                }
            }
            tx.commit().unwrap();
        }
    }

    /// A closed store's file (closing checkpoints the WAL into it), optionally after
    /// deleting the first half of `records` and every other `frames` row, no vacuum.
    fn build(rows: usize, delete: bool) -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let conn = open(&path);
        fill(&conn, 0..rows);
        if delete {
            let half = format!("rec/{:05}", rows / 2).into_bytes();
            conn.execute("DELETE FROM records WHERE k < ?1", [half])
                .unwrap();
            conn.execute("DELETE FROM frames WHERE rowid % 2 = 0", [])
                .unwrap();
        }
        drop(conn);
        std::fs::read(&path).unwrap()
    }

    /// A copy of the files in a fresh directory, opened with SQLite.
    fn sqlite_open(db: &[u8], wal: Option<&[u8]>) -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("c.db"), db).unwrap();
        if let Some(wal) = wal {
            std::fs::write(dir.path().join("c.db-wal"), wal).unwrap();
        }
        let conn = Connection::open(dir.path().join("c.db")).unwrap();
        (dir, conn)
    }

    /// Every (k, v) row SQLite returns from both tables.
    fn truth(db: &[u8], wal: Option<&[u8]>) -> Rows {
        let (_dir, conn) = sqlite_open(db, wal);
        let sql = "SELECT k, v FROM records UNION ALL SELECT k, v FROM frames";
        let mut stmt = conn.prepare(sql).unwrap();
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
        rows.map(|r| r.unwrap()).collect()
    }

    /// dbstat's pages of one table or index and kind ('leaf', 'internal', 'overflow').
    fn dbstat_pages(db: &[u8], name: &str, kind: &str) -> Vec<u32> {
        let (_dir, conn) = sqlite_open(db, None);
        let sql = "SELECT pageno FROM dbstat WHERE name LIKE ?1 AND pagetype = ?2 ORDER BY pageno";
        let mut stmt = conn.prepare(sql).unwrap();
        let rows = stmt.query_map((name, kind), |r| r.get(0)).unwrap();
        rows.map(|r| r.unwrap()).collect()
    }

    /// Runs a scan, checking that no record comes twice.
    fn salvage(image: &FileImage) -> (Rows, ScanReport) {
        let mut rows = Rows::new();
        let mut visits = 0;
        let report = scan_records(image, &mut |k, v| {
            visits += 1;
            rows.insert((k.to_vec(), v.to_vec()));
        });
        assert_eq!(visits, rows.len(), "a record came back twice");
        assert_eq!(report.records, visits as u64);
        (rows, report)
    }

    /// Compares row sets, naming the keys that differ rather than printing values.
    #[track_caller]
    fn assert_rows(got: &Rows, want: &Rows, context: &str) {
        let name =
            |r: &(Vec<u8>, Vec<u8>)| format!("{}:{}", String::from_utf8_lossy(&r.0), r.1.len());
        let extra: Vec<String> = got.difference(want).map(name).collect();
        let lost: Vec<String> = want.difference(got).map(name).collect();
        assert!(
            extra.is_empty() && lost.is_empty(),
            "{context}: extra {extra:?}, lost {lost:?}"
        );
    }

    fn page_bytes(db: &[u8], pgno: u32) -> &[u8] {
        &db[(pgno as usize - 1) * PAGE..pgno as usize * PAGE]
    }

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    /// Rows whose key starts one of the cells of page `pgno`. Keys are short and come
    /// first in the record, so they lie within a cell's first bytes; stale bytes
    /// elsewhere on the page (left by earlier splits) are not counted.
    fn rows_on_page(rows: &Rows, db: &[u8], pgno: u32) -> Rows {
        let page = page_bytes(db, pgno);
        let header = if [2, 5].contains(&page[0]) { 12 } else { 8 };
        let cells = u16::from_be_bytes([page[3], page[4]]) as usize;
        let starts = (0..cells).map(|i| {
            let at = header + 2 * i;
            u16::from_be_bytes([page[at], page[at + 1]]) as usize
        });
        let heads: Vec<&[u8]> = starts.map(|o| &page[o..(o + 48).min(PAGE)]).collect();
        let on_page = |k: &[u8]| heads.iter().any(|h| contains(h, k));
        rows.iter().filter(|(k, _)| on_page(k)).cloned().collect()
    }

    fn zero_page(db: &[u8], pgno: u32) -> Vec<u8> {
        let mut out = db.to_vec();
        out[(pgno as usize - 1) * PAGE..pgno as usize * PAGE].fill(0);
        out
    }

    fn noted(report: &ScanReport, pgno: u32) -> bool {
        report.damaged.iter().any(|(p, _)| *p == pgno)
    }

    #[test]
    fn intact_store_yields_exactly_sqlites_rows() {
        let db = build(300, false);
        let expected = truth(&db, None);
        assert!(expected.iter().filter(|(_, v)| v.len() > 8192).count() >= 40);
        let (rows, report) = salvage(&FileImage::new(db.clone(), 8192));
        assert_rows(&rows, &expected, "");
        assert!(report.damaged.is_empty(), "{:?}", report.damaged);
        assert_eq!(report.pages as usize, db.len() / PAGE);
        assert_eq!(report.skipped_cells, 0);
        assert_eq!(report.other_pages + report.missing_pages, 0);
        // Every page is accounted for, and the kinds agree with SQLite's dbstat.
        assert_eq!(
            report.leaf_pages as usize,
            dbstat_pages(&db, "%", "leaf").len()
        );
        assert_eq!(
            report.interior_pages as usize,
            dbstat_pages(&db, "%", "internal").len()
        );
        assert_eq!(
            report.overflow_pages as usize,
            dbstat_pages(&db, "%", "overflow").len()
        );
        let kinds = report.leaf_pages + report.interior_pages + report.overflow_pages;
        assert_eq!(
            kinds + report.ptrmap_pages + report.free_pages,
            report.pages
        );
        assert!(report.ptrmap_pages >= 1);
        // WITHOUT ROWID tables are index b-trees, which keep entries in their interior
        // cells too: some records live on interior pages and nowhere else.
        let interior = dbstat_pages(&db, "records", "internal");
        assert!(!interior.is_empty());
        let held: usize = interior
            .iter()
            .map(|&p| rows_on_page(&expected, &db, p).len())
            .sum();
        assert!(held > 0, "no record on an interior page");
    }

    #[test]
    fn deleted_rows_on_free_pages_stay_deleted() {
        let db = build(300, true);
        let expected = truth(&db, None);
        let header = DbHeader::parse(&db).unwrap();
        assert!(header.freelist_count > 10);
        // Many deleted rows are still in the file, on free pages...
        let stale: Vec<Vec<u8>> = (0..150)
            .map(|i| record(i).0)
            .filter(|k| contains(&db, k))
            .collect();
        assert!(
            stale.len() > 50,
            "the test needs stale records on free pages"
        );
        assert!(!expected.iter().any(|(k, _)| stale.contains(k)));
        // ...and do not come back.
        let (rows, report) = salvage(&FileImage::new(db, 8192));
        assert_rows(&rows, &expected, "");
        assert!(report.damaged.is_empty(), "{:?}", report.damaged);
        assert_eq!(report.free_pages, header.freelist_count);
    }

    #[test]
    fn zeroed_leaf_or_interior_page_loses_only_its_rows() {
        let db = build(300, false);
        let expected = truth(&db, None);
        for (name, kind) in [
            ("records", "leaf"),
            ("frames", "leaf"),
            ("records", "internal"),
        ] {
            let pages = dbstat_pages(&db, name, kind);
            let pgno = pages[pages.len() / 2];
            let lost = rows_on_page(&expected, &db, pgno);
            assert!(!lost.is_empty(), "{name} {kind} page {pgno}");
            let (rows, report) = salvage(&FileImage::new(zero_page(&db, pgno), 8192));
            let want: Rows = expected.difference(&lost).cloned().collect();
            assert_rows(&rows, &want, &format!("{name} {kind} page {pgno}"));
            assert!(noted(&report, pgno), "{:?}", report.damaged);
        }
    }

    #[test]
    fn zeroed_page_one_still_excludes_free_pages_through_the_pointer_map() {
        let db = build(300, true);
        let expected = truth(&db, None);
        let free = DbHeader::parse(&db).unwrap().freelist_count;
        // With page 1 gone, the header (page size, freelist, database size) is
        // unknown: the page size falls back to the caller's, the freelist cannot be
        // walked, and only the pointer map's "free page" entries keep the stale
        // records on free pages from coming back.
        let (rows, report) = salvage(&FileImage::new(zero_page(&db, 1), 8192));
        assert_rows(&rows, &expected, "");
        assert!(noted(&report, 1));
        assert_eq!(report.free_pages, free);
    }

    #[test]
    fn zeroed_pointer_map_page_still_excludes_free_pages_through_the_freelist() {
        let db = build(300, true);
        let expected = truth(&db, None);
        let (rows, report) = salvage(&FileImage::new(zero_page(&db, 2), 8192));
        assert_rows(&rows, &expected, "");
        assert!(noted(&report, 2), "{:?}", report.damaged);
        // Overflow pages the map described are found through their chains.
        assert_eq!(report.other_pages, 0, "{:?}", report.damaged);
    }

    #[test]
    fn file_cut_short_loses_only_what_was_on_the_missing_page() {
        let db = build(300, false);
        let expected = truth(&db, None);
        let last = (db.len() / PAGE) as u32;
        let image = FileImage::new(db[..db.len() - PAGE].to_vec(), 8192);
        // The header still names the full size, so the last page shows as missing.
        assert_eq!(image.page_count(), last);
        let (rows, report) = salvage(&image);
        assert!(rows.is_subset(&expected));
        assert_eq!(report.missing_pages, 1);
        assert!(noted(&report, last), "{:?}", report.damaged);
        // What is lost is the rows stored on the last page, or whose overflow chain
        // runs through it (each a skipped cell).
        let on_page = rows_on_page(&expected, &db, last);
        assert!(on_page.is_disjoint(&rows));
        let lost = expected.len() - rows.len();
        assert!(lost >= 1 && lost as u64 <= on_page.len() as u64 + report.skipped_cells);
    }

    #[test]
    fn overlay_of_wal_pages_reads_the_latest_state() {
        use super::super::wal;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let conn = open(&path);
        fill(&conn, 0..120);
        conn.execute("DELETE FROM records WHERE k < 'rec/00060'", [])
            .unwrap();
        // Copies taken while the connection is open, before any checkpoint.
        let db = std::fs::read(&path).unwrap();
        let log = std::fs::read(dir.path().join("s.db-wal")).unwrap();
        let expected = truth(&db, Some(&log));

        let analysis = wal::analyze(&log, wal::db_page_size(&db));
        assert!(analysis.damage.is_none());
        let overlay = analysis.overlay(&log);
        let pages = analysis.rebuilt_page_count().unwrap();
        let image = FileImage::with_overlay(db.clone(), overlay, 8192).with_page_count(pages);
        let (rows, report) = salvage(&image);
        assert_rows(&rows, &expected, "");
        assert!(report.damaged.is_empty(), "{:?}", report.damaged);
        // The same through a rebuilt image.
        let rebuilt = wal::rebuild(&db, &log, &analysis).unwrap();
        assert_rows(
            &salvage(&FileImage::new(rebuilt, 8192)).0,
            &expected,
            "rebuilt",
        );
        drop(conn);
    }

    #[test]
    fn page_that_looks_like_a_btree_page_but_does_not_parse_is_reported() {
        let db = build(300, false);
        let expected = truth(&db, None);
        let pages = dbstat_pages(&db, "records", "leaf");
        let pgno = pages[pages.len() / 3];
        let lost = rows_on_page(&expected, &db, pgno);
        let mut bad = db.clone();
        let at = (pgno as usize - 1) * PAGE;
        bad[at + 3..at + 5].copy_from_slice(&0xffffu16.to_be_bytes());
        let (rows, report) = salvage(&FileImage::new(bad, 8192));
        assert_rows(&rows, &expected.difference(&lost).cloned().collect(), "");
        let why = report.damaged.iter().find(|(p, _)| *p == pgno).unwrap();
        assert!(why.1.contains("65535 cells"), "{why:?}");
        assert_eq!(report.other_pages, 1);
    }

    #[test]
    fn loops_in_the_freelist_and_overflow_chains_are_cut_and_reported() {
        let db = build(300, true);
        let expected = truth(&db, None);
        // The freelist's last trunk made to point back at itself.
        let mut looped = db.clone();
        let mut trunk = DbHeader::parse(&db).unwrap().freelist_trunk;
        loop {
            let next = be32(page_bytes(&db, trunk), 0).unwrap();
            if next == 0 {
                break;
            }
            trunk = next;
        }
        let at = (trunk as usize - 1) * PAGE;
        looped[at..at + 4].copy_from_slice(&trunk.to_be_bytes());
        let (rows, report) = salvage(&FileImage::new(looped, 8192));
        assert_rows(&rows, &expected, "freelist loop");
        assert!(report.damaged.iter().any(|(_, why)| why.contains("loops")));

        // An overflow page in the middle of a chain made to point at itself: only the
        // record that owns the chain is lost.
        let middle = dbstat_pages(&db, "%", "overflow")
            .into_iter()
            .find(|&p| be32(page_bytes(&db, p), 0).unwrap() != 0)
            .unwrap();
        let mut looped = db.clone();
        let at = (middle as usize - 1) * PAGE;
        looped[at..at + 4].copy_from_slice(&middle.to_be_bytes());
        let (rows, report) = salvage(&FileImage::new(looped, 8192));
        assert!(rows.is_subset(&expected));
        assert_eq!((expected.len() - rows.len(), report.skipped_cells), (1, 1));
        assert!(report
            .damaged
            .iter()
            .any(|(_, why)| why.contains("already part of a chain")));
    }

    /// A header that parses, with random freelist and pointer-map fields, so that
    /// fuzzed pages get past the header.
    fn plausible_header(rng: &mut Rng, page_size: usize, pages: usize) -> Vec<u8> {
        let mut h = rng.bytes(100);
        h[..16].copy_from_slice(MAGIC);
        let raw = if page_size == 65536 {
            1
        } else {
            page_size as u16
        };
        h[16..18].copy_from_slice(&raw.to_be_bytes());
        h[20] = 0;
        for off in [28, 32, 36, 52] {
            let v = rng.below(pages as u64 + 3) as u32;
            h[off..off + 4].copy_from_slice(&v.to_be_bytes());
        }
        h
    }

    #[test]
    fn garbage_and_bit_flips_never_panic() {
        let mut rng = Rng(0xfeed);
        for _ in 0..200 {
            let page_size = 512usize << rng.below(5);
            let pages = rng.below(12) as usize;
            let len = pages * page_size + rng.below(3) as usize * 37;
            let mut data = rng.bytes(len);
            if data.len() >= 100 && rng.below(2) == 0 {
                data[..100].copy_from_slice(&plausible_header(&mut rng, page_size, pages));
            }
            // Pages that claim to be b-tree pages, to get into cell parsing.
            for p in 1..pages {
                if rng.below(2) == 0 {
                    data[p * page_size] = [2, 5, 10, 13][rng.below(4) as usize];
                    data[p * page_size + 3] = 0;
                }
            }
            let fallback = [8192, 512, 0, 3000][rng.below(4) as usize];
            salvage_quietly(&FileImage::new(data, fallback));
        }
        let db = build(60, true);
        for i in 0..300 {
            let mut bad = db.clone();
            let pgno = rng.below((db.len() / PAGE) as u64) as usize;
            let at = match i % 3 {
                0 => rng.below(db.len() as u64) as usize,
                _ => pgno * PAGE + rng.below(if pgno == 0 { 140 } else { 64 }) as usize,
            };
            bad[at] ^= 1 << rng.below(8);
            if i % 10 == 0 {
                let start = pgno * PAGE + 8;
                bad[start..start + 400].copy_from_slice(&rng.bytes(400));
            }
            let cut = bad.len()
                - if i % 7 == 0 {
                    rng.below(3 * PAGE as u64) as usize
                } else {
                    0
                };
            salvage_quietly(&FileImage::new(bad[..cut].to_vec(), 8192));
        }
    }

    /// A scan whose only check is that it returns.
    fn salvage_quietly(image: &FileImage) {
        let mut visits = 0u64;
        let report = scan_records(image, &mut |_, _| visits += 1);
        assert_eq!(report.records, visits);
    }
}
