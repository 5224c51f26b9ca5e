//! Listing live keys in order: a k-way merge of the hot index (gathered and
//! sorted) and the sealed segments' sorted metadata tables. For each key the
//! newest record (highest version) wins; tombstones hide the key.
//!
//! Memory is bounded by the page: at most `limit` hot entries are gathered at
//! a time. When more hot entries matched than fit, the merge stops at the
//! largest gathered key and the next round continues from there.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::segments::SegmentTable;
use crate::error::Result;
use crate::index::{Index, IndexEntry, RecordKeys};

/// Which keys: those starting with `prefix`, strictly after `after`.
#[derive(Clone, Copy)]
pub struct Range<'a> {
    pub prefix: &'a [u8],
    pub after: Option<&'a [u8]>,
}

impl Range<'_> {
    fn admits(&self, key: &[u8]) -> bool {
        key.starts_with(self.prefix) && self.after.is_none_or(|after| key > after)
    }

    /// The first key a sorted source must look at.
    fn start(&self) -> &[u8] {
        match self.after {
            Some(after) if after > self.prefix => after,
            _ => self.prefix,
        }
    }
}

/// Live keys of `index` and `segments` in `range`, in key order, at most `limit`.
pub fn live_keys_page(
    index: &Index,
    segments: &SegmentTable,
    hot_complete: bool,
    range: Range<'_>,
    limit: usize,
    visit: impl FnMut(&[u8], IndexEntry),
) -> Result<()> {
    page(
        |f| index.for_each(f),
        segments,
        hot_complete,
        range,
        limit,
        visit,
    )
}

/// The same over a copy of the hot index's entries (a consistent cut).
pub fn live_entries(
    hot: &[IndexEntry],
    segments: &SegmentTable,
    hot_complete: bool,
    range: Range<'_>,
    limit: usize,
    visit: impl FnMut(&[u8], IndexEntry),
) -> Result<()> {
    page(
        |f| hot.iter().for_each(|entry| f(*entry)),
        segments,
        hot_complete,
        range,
        limit,
        visit,
    )
}

/// A hot entry ordered by its key.
struct ByKey<'a>(&'a [u8], IndexEntry);

impl PartialEq for ByKey<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}
impl Eq for ByKey<'_> {}
impl PartialOrd for ByKey<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for ByKey<'_> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.cmp(other.0)
    }
}

fn page(
    for_each_hot: impl Fn(&mut dyn FnMut(IndexEntry)),
    segments: &SegmentTable,
    hot_complete: bool,
    range: Range<'_>,
    limit: usize,
    mut visit: impl FnMut(&[u8], IndexEntry),
) -> Result<()> {
    let mut cursor: Option<Vec<u8>> = range.after.map(<[u8]>::to_vec);
    let mut remaining = limit;
    // Each round gathers `remaining` hot entries past the cursor and moves
    // the cursor past all of them, so the rounds end.
    while remaining > 0 {
        let round = Range {
            prefix: range.prefix,
            after: cursor.as_deref(),
        };
        let (hot, truncated) = gather_hot(&for_each_hot, segments, round, remaining);
        let upper: Option<Vec<u8>> = truncated
            .then(|| hot.last().map(|h| h.0.to_vec()))
            .flatten();
        let emitted = merge(
            &hot,
            segments,
            hot_complete,
            round,
            upper.as_deref(),
            remaining,
            &mut visit,
        )?;
        remaining -= emitted;
        match upper {
            Some(upper) => cursor = Some(upper),
            None => break,
        }
    }
    Ok(())
}

/// The `cap` smallest hot entries in `range` (tombstones included), sorted,
/// and whether any matching entry was left out.
fn gather_hot<'s>(
    for_each_hot: &impl Fn(&mut dyn FnMut(IndexEntry)),
    segments: &'s SegmentTable,
    range: Range<'_>,
    cap: usize,
) -> (Vec<ByKey<'s>>, bool) {
    let mut largest_first: BinaryHeap<ByKey<'s>> = BinaryHeap::new();
    let mut truncated = false;
    for_each_hot(&mut |entry| {
        let Some(key) = segments.key_of(&entry) else {
            return;
        };
        if !range.admits(key) {
            return;
        }
        if largest_first.len() < cap {
            largest_first.push(ByKey(key, entry));
        } else if largest_first.peek().is_some_and(|largest| key < largest.0) {
            largest_first.pop();
            largest_first.push(ByKey(key, entry));
            truncated = true;
        } else {
            truncated = true;
        }
    });
    (largest_first.into_sorted_vec(), truncated)
}

type Source<'a> = Box<dyn Iterator<Item = Result<(&'a [u8], IndexEntry)>> + 'a>;
/// A source's current key: (key, newest version first, source).
type Head<'a> = Reverse<(&'a [u8], Reverse<u64>, usize)>;

/// Merges the sorted hot entries with the cold segments' tables; emits at
/// most `limit` live keys, none past `upper`. Returns how many it emitted.
fn merge<'s>(
    hot: &'s [ByKey<'s>],
    segments: &'s SegmentTable,
    hot_complete: bool,
    range: Range<'_>,
    upper: Option<&[u8]>,
    limit: usize,
    visit: &mut impl FnMut(&[u8], IndexEntry),
) -> Result<usize> {
    let prefix = range.prefix.to_vec();
    let in_bounds = move |key: &[u8]| key.starts_with(&prefix) || key < prefix.as_slice();
    let mut sources: Vec<Source<'_>> = vec![Box::new(hot.iter().map(|h| Ok((h.0, h.1))))];
    if !hot_complete {
        for segment in segments.cold() {
            let id = segment.id();
            let meta = segment.meta().expect("cold segments have metadata");
            let in_bounds = in_bounds.clone();
            sources.push(Box::new(
                meta.entries_from(segment.map.bytes(), range.start())
                    .map(move |found| {
                        found.map(|e| {
                            let entry = IndexEntry {
                                version: e.version,
                                segment_id: id,
                                offset: e.offset,
                                len: e.len,
                                tombstone: e.tombstone,
                            };
                            (e.key, entry)
                        })
                    })
                    .take_while(move |item| item.as_ref().map_or(true, |(key, _)| in_bounds(key))),
            ));
        }
    }
    // Min-heap on (key, newest version first, source).
    let mut heads: BinaryHeap<Head<'_>> = BinaryHeap::new();
    let mut entries: Vec<Option<IndexEntry>> = vec![None; sources.len()];
    for source in 0..sources.len() {
        advance(&mut sources, &mut heads, &mut entries, source, range)?;
    }
    let mut emitted = 0;
    while emitted < limit {
        let Some(Reverse((key, _, source))) = heads.pop() else {
            break;
        };
        if upper.is_some_and(|upper| key > upper) {
            break;
        }
        let newest = entries[source].take().expect("a head has its entry");
        advance(&mut sources, &mut heads, &mut entries, source, range)?;
        // Older records of the same key in other sources.
        while let Some(Reverse((next, _, other))) = heads.peek().copied() {
            if next != key {
                break;
            }
            heads.pop();
            entries[other] = None;
            advance(&mut sources, &mut heads, &mut entries, other, range)?;
        }
        if !newest.tombstone {
            visit(key, newest);
            emitted += 1;
        }
    }
    Ok(emitted)
}

/// Moves `source` to its next entry in `range`.
fn advance<'a>(
    sources: &mut [Source<'a>],
    heads: &mut BinaryHeap<Head<'a>>,
    entries: &mut [Option<IndexEntry>],
    source: usize,
    range: Range<'_>,
) -> Result<()> {
    for item in sources[source].by_ref() {
        let (key, entry) = item?;
        if !range.admits(key) {
            continue;
        }
        heads.push(Reverse((key, Reverse(entry.version), source)));
        entries[source] = Some(entry);
        return Ok(());
    }
    Ok(())
}
