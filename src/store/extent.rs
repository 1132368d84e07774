//! Extents: the settled frames of consecutive chunks of one file, packed into one value.
//!
//! Databases store small values poorly: a B-tree leaf of 300-byte LLM frames runs half
//! to two-thirds full after the churn of the compactor (measured, see [`super`]), which
//! alone would halve the ratio a user sees on disk. So the compactor packs the frames it
//! settles into extents of a size that fills the database's pages
//! ([`super::engine::Engine::extent_target`]), keyed by (ino, first chunk index).
//!
//! Layout (varints are unsigned LEB128):
//!
//! | field | size | meaning |
//! | --- | --- | --- |
//! | version | 1 byte | extent format version (1) |
//! | count | varint | number of chunks, at least 1 |
//! | table | per chunk: index, version, frame length (varints) | the first index is absolute, later ones are the gap after the previous index (so consecutive chunks cost a zero byte) |
//! | frames | rest | the frames, in table order |
//!
//! Indexes strictly increase; gaps are holes or chunks that live elsewhere (hot).

use super::StoreError;
use crate::frame::varint;

const EXTENT_VERSION: u8 = 1;

/// One chunk of an extent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExtentChunk {
    /// The chunk's index in its file (the chunk covers bytes `index * chunk_size` on).
    pub index: u64,
    /// The chunk's content version ([`super::records::Inode::data_ver`] when it was
    /// written).
    pub ver: u64,
    /// The chunk's frame ([`crate::frame`]).
    pub frame: Vec<u8>,
}

/// An extent decoded: its chunks, in strictly increasing index order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Extent {
    chunks: Vec<ExtentChunk>,
}

fn corrupt(why: &str) -> StoreError {
    StoreError::Corrupt(format!("extent: {why}"))
}

/// One row of an extent's table: index, version, frame start, frame length.
type Row = (u64, u64, usize, usize);

/// The table of an extent (frame starts are offsets into `b`), parsed without copying,
/// and where the frames start.
fn parse_table(b: &[u8]) -> Result<(Vec<Row>, usize), StoreError> {
    if b.first() != Some(&EXTENT_VERSION) {
        return Err(corrupt("unknown version"));
    }
    let mut pos = 1;
    let count = varint::get(b, &mut pos).ok_or_else(|| corrupt("truncated"))?;
    // Each chunk takes at least 3 table bytes: a count beyond that is corruption, caught
    // before it sizes an allocation.
    if count == 0 || count > (b.len() / 3) as u64 {
        return Err(corrupt("bad chunk count"));
    }
    let mut table = Vec::with_capacity(count as usize);
    let mut index = 0u64;
    let mut total = 0usize;
    for i in 0..count {
        let step = varint::get(b, &mut pos).ok_or_else(|| corrupt("truncated"))?;
        index = if i == 0 {
            step
        } else {
            index
                .checked_add(step)
                .and_then(|x| x.checked_add(1))
                .ok_or_else(|| corrupt("index overflow"))?
        };
        let ver = varint::get(b, &mut pos).ok_or_else(|| corrupt("truncated"))?;
        let len = varint::get(b, &mut pos).ok_or_else(|| corrupt("truncated"))? as usize;
        table.push((index, ver, total, len));
        total = total
            .checked_add(len)
            .ok_or_else(|| corrupt("length overflow"))?;
    }
    if b.len() - pos != total {
        return Err(corrupt("frames do not match the table"));
    }
    for t in &mut table {
        t.2 += pos;
    }
    Ok((table, pos))
}

impl Extent {
    /// Parses and copies a whole encoded extent; [`StoreError::Corrupt`] for an unknown
    /// version, a bad count, a truncated table or frames that do not match it.
    pub fn decode(b: &[u8]) -> Result<Extent, StoreError> {
        let (table, _) = parse_table(b)?;
        Ok(Extent {
            chunks: table
                .into_iter()
                .map(|(index, ver, start, len)| ExtentChunk {
                    index,
                    ver,
                    frame: b[start..start + len].to_vec(),
                })
                .collect(),
        })
    }

    /// The version and frame of chunk `index` in an encoded extent, without decoding the
    /// rest of it.
    pub fn lookup(b: &[u8], index: u64) -> Result<Option<(u64, &[u8])>, StoreError> {
        let (table, _) = parse_table(b)?;
        Ok(table
            .into_iter()
            .find(|t| t.0 == index)
            .map(|(_, ver, start, len)| (ver, &b[start..start + len])))
    }

    /// (index, version, frame length) of every chunk of an encoded extent.
    pub fn summary(b: &[u8]) -> Result<Vec<(u64, u64, usize)>, StoreError> {
        Ok(parse_table(b)?
            .0
            .into_iter()
            .map(|(i, v, _, l)| (i, v, l))
            .collect())
    }

    /// The extent's bytes (layout above). An empty extent encodes to a count of 0, which
    /// [`Extent::decode`] refuses: store only extents with chunks.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        out.push(EXTENT_VERSION);
        varint::put(&mut out, self.chunks.len() as u64);
        let mut prev: Option<u64> = None;
        for c in &self.chunks {
            varint::put(&mut out, prev.map_or(c.index, |p| c.index - p - 1));
            varint::put(&mut out, c.ver);
            varint::put(&mut out, c.frame.len() as u64);
            prev = Some(c.index);
        }
        for c in &self.chunks {
            out.extend_from_slice(&c.frame);
        }
        out
    }

    /// The exact length of [`Extent::encode`]'s output.
    pub fn encoded_len(&self) -> usize {
        let mut n = 1 + varint_len(self.chunks.len() as u64);
        let mut prev: Option<u64> = None;
        for c in &self.chunks {
            n += varint_len(prev.map_or(c.index, |p| c.index - p - 1))
                + varint_len(c.ver)
                + varint_len(c.frame.len() as u64)
                + c.frame.len();
            prev = Some(c.index);
        }
        n
    }

    /// What adding a chunk of `frame_len` bytes after the last would add, at most.
    pub fn growth(frame_len: usize) -> usize {
        frame_len + 3 * 10
    }

    /// Whether the extent holds no chunk.
    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// Number of chunks in the extent.
    pub fn len(&self) -> usize {
        self.chunks.len()
    }

    /// Index of the first chunk, or `None` when empty.
    pub fn first(&self) -> Option<u64> {
        self.chunks.first().map(|c| c.index)
    }

    /// Index of the last chunk, or `None` when empty.
    pub fn last(&self) -> Option<u64> {
        self.chunks.last().map(|c| c.index)
    }

    /// The chunks, in index order.
    pub fn chunks(&self) -> &[ExtentChunk] {
        &self.chunks
    }

    /// Chunk `index`, or `None` if the extent does not hold it.
    pub fn get(&self, index: u64) -> Option<&ExtentChunk> {
        self.chunks
            .binary_search_by_key(&index, |c| c.index)
            .ok()
            .map(|i| &self.chunks[i])
    }

    /// Adds (or replaces) chunk `index`, keeping the order.
    pub fn insert(&mut self, chunk: ExtentChunk) {
        match self.chunks.binary_search_by_key(&chunk.index, |c| c.index) {
            Ok(i) => self.chunks[i] = chunk,
            Err(i) => self.chunks.insert(i, chunk),
        }
    }

    /// Removes chunks with `from <= index < to`; returns their frame bytes.
    pub fn remove_range(&mut self, from: u64, to: u64) -> u64 {
        let mut freed = 0;
        self.chunks.retain(|c| {
            let gone = (from..to).contains(&c.index);
            if gone {
                freed += c.frame.len() as u64;
            }
            !gone
        });
        freed
    }

    /// Splits off the chunks with index >= `at`.
    pub fn split_off(&mut self, at: u64) -> Extent {
        let i = self.chunks.partition_point(|c| c.index < at);
        Extent {
            chunks: self.chunks.split_off(i),
        }
    }

    /// Bytes of frames held.
    pub fn frame_bytes(&self) -> u64 {
        self.chunks.iter().map(|c| c.frame.len() as u64).sum()
    }
}

fn varint_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(index: u64, ver: u64, len: usize) -> ExtentChunk {
        ExtentChunk {
            index,
            ver,
            frame: (0..len).map(|i| (i as u64 + index) as u8).collect(),
        }
    }

    #[test]
    fn round_trip_lookup_and_edits() {
        let mut e = Extent::default();
        for (i, idx) in [3u64, 4, 5, 9, 300].into_iter().enumerate() {
            e.insert(chunk(idx, 100 + i as u64, 10 + i * 7));
        }
        let b = e.encode();
        assert_eq!(b.len(), e.encoded_len());
        assert_eq!(Extent::decode(&b).unwrap(), e);
        let (ver, frame) = Extent::lookup(&b, 9).unwrap().unwrap();
        assert_eq!((ver, frame), (103, &chunk(9, 0, 31).frame[..]));
        assert!(Extent::lookup(&b, 6).unwrap().is_none());
        assert_eq!(e.remove_range(4, 10), (17 + 24 + 31) as u64);
        assert_eq!(e.len(), 2);
        let tail = e.split_off(100);
        assert_eq!(
            (e.first(), e.last(), tail.first()),
            (Some(3), Some(3), Some(300))
        );
    }

    #[test]
    fn damage_is_an_error_never_a_panic() {
        let mut e = Extent::default();
        for idx in 0..20 {
            e.insert(chunk(idx, idx, 40));
        }
        let good = e.encode();
        for cut in 0..good.len() {
            assert!(Extent::decode(&good[..cut]).is_err());
        }
        for i in 0..good.len() {
            for bit in [1u8, 0x40, 0x80] {
                let mut bad = good.clone();
                bad[i] ^= bit;
                let _ = Extent::decode(&bad);
                let _ = Extent::lookup(&bad, 5);
            }
        }
        assert!(Extent::decode(&[1, 0xff, 0xff, 0xff, 0xff, 0x0f]).is_err());
    }
}
