//! How the operator commands show what they found: a table for people,
//! `--json` for programs. Everything goes through [`Stdout`], so a full or
//! closed stdout is an error to report, never a panic.

use hightower_engine::Stats;
use hightower_engine::display_key;
use hightower_engine::{RecordInfo, SegmentInfo, SegmentVerdict, SegmentVerification};

use crate::output::{OutputError, Stdout, outln};

pub fn segments(out: &mut Stdout, segments: &[SegmentInfo], json: bool) -> Result<(), OutputError> {
    if json {
        return out.json(segments);
    }
    outln!(
        out,
        "{:<20} {:>6} {:>12} {:>9} {:>9} {:>12} {:>12} {:>10} {:>10}  kind",
        "segment",
        "rank",
        "bytes",
        "records",
        "live",
        "live bytes",
        "dead bytes",
        "meta",
        "bloom"
    )?;
    for s in segments {
        let kind = match (s.active, s.compacted) {
            (true, _) => "active",
            (false, true) => "compacted",
            (false, false) => "sealed",
        };
        outln!(
            out,
            "{:<20} {:>6} {:>12} {:>9} {:>9} {:>12} {:>12} {:>10} {:>10}  {kind}",
            s.file,
            s.rank,
            s.bytes,
            s.records,
            s.live_records,
            s.live_bytes,
            s.dead_bytes,
            s.metadata_bytes,
            s.bloom_filter_bytes
        )?;
    }
    let total = |f: fn(&SegmentInfo) -> u64| segments.iter().map(f).sum::<u64>();
    outln!(
        out,
        "{} segment(s), {} bytes, {} live bytes, {} dead bytes, {} metadata bytes",
        segments.len(),
        total(|s| s.bytes),
        total(|s| s.live_bytes),
        total(|s| s.dead_bytes),
        total(|s| s.metadata_bytes)
    )
}

pub fn records(out: &mut Stdout, records: &[RecordInfo], json: bool) -> Result<(), OutputError> {
    if json {
        let views: Vec<RecordView<'_>> = records.iter().map(RecordView::from).collect();
        return out.json(&views);
    }
    outln!(
        out,
        "{:>10} {:<9} {:>10} {:>10} {:>8} {:<4}  key",
        "offset",
        "kind",
        "version",
        "log index",
        "value",
        "live"
    )?;
    for r in records {
        outln!(
            out,
            "{:>10} {:<9} {:>10} {:>10} {:>8} {:<4}  {}",
            r.offset,
            r.kind,
            r.version,
            r.log_index,
            r.value_bytes,
            if r.live { "yes" } else { "no" },
            display_key(&r.key)
        )?;
    }
    outln!(out, "{} record(s)", records.len())
}

/// A record in `--json`: its key as a string (`key`) when it is UTF-8,
/// else as standard base64 (`key_base64`); exactly one of the two.
#[derive(serde::Serialize)]
struct RecordView<'a> {
    offset: u64,
    kind: &'a str,
    version: u64,
    log_index: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key_base64: Option<String>,
    value_bytes: u64,
    live: bool,
}

impl<'a> From<&'a RecordInfo> for RecordView<'a> {
    fn from(r: &'a RecordInfo) -> Self {
        use base64::Engine;
        let text = std::str::from_utf8(&r.key).ok();
        RecordView {
            offset: r.offset,
            kind: r.kind,
            version: r.version,
            log_index: r.log_index,
            key: text,
            key_base64: text
                .is_none()
                .then(|| base64::engine::general_purpose::STANDARD.encode(&r.key)),
            value_bytes: r.value_bytes,
            live: r.live,
        }
    }
}

pub fn stats(out: &mut Stdout, stats: &Stats, json: bool) -> Result<(), OutputError> {
    if json {
        return out.json(stats);
    }
    let s = &stats.storage;
    let m = &stats.metrics;
    outln!(out, "data directory:      {}", stats.data_dir)?;
    outln!(out, "sync mode:           {}", stats.sync)?;
    outln!(out, "keys:                {}", s.keys)?;
    outln!(out, "segments:            {}", s.segments)?;
    outln!(out, "disk bytes:          {}", s.disk_bytes)?;
    outln!(out, "live bytes:          {}", s.live_bytes)?;
    outln!(out, "index memory bytes:  {}", s.index_memory_bytes)?;
    outln!(
        out,
        "hot index:           {} entries ({} tombstones), {} evicted, {}",
        s.hot_entries,
        s.hot_tombstones,
        s.hot_evictions,
        if s.hot_index_complete {
            "holds every key"
        } else {
            "misses read segment metadata"
        }
    )?;
    outln!(out, "last version:        {}", s.committed_version)?;
    outln!(out, "last log index:      {}", s.last_log_index)?;
    outln!(out, "recovered records:   {}", stats.recovery.records)?;
    match &stats.recovery.tail_cut {
        None => outln!(out, "tail cut at open:    none")?,
        Some(cut) => {
            outln!(
                out,
                "tail cut at open:    {} bytes of {} at offset {}, kept as {}; versions continue after {}",
                cut.bytes,
                cut.segment,
                cut.offset,
                cut.kept_as
                    .as_deref()
                    .unwrap_or("(not cut: opened read-only)"),
                cut.versions_skipped_to
            )?;
            outln!(out, "                     {}", cut.kind.explain())?;
        }
    }
    outln!(
        out,
        "this process:        {} puts, {} deletes, {} batches, {} gets, {} fsyncs",
        m.puts,
        m.deletes,
        m.batches,
        m.gets,
        m.fsyncs
    )?;
    outln!(out, "commit latency:      {}", latency(&m.commit_latency))?;
    outln!(out, "fsync latency:       {}", latency(&m.fsync_latency))?;
    if let Some(reason) = &s.poisoned {
        outln!(out, "WRITES REFUSED:      {reason}")?;
    }
    Ok(())
}

/// `3 samples: p50 12 µs, p99 40 µs, max 41 µs`, or `no samples`.
fn latency(l: &hightower_engine::LatencySummary) -> String {
    if l.count == 0 {
        return "no samples (this process)".into();
    }
    format!(
        "{} samples: p50 {} µs, p99 {} µs, max {} µs",
        l.count, l.p50_us, l.p99_us, l.max_us
    )
}

/// Prints the verification; returns whether corruption was found.
pub fn verification(
    out: &mut Stdout,
    results: &[SegmentVerification],
    json: bool,
) -> Result<bool, OutputError> {
    let corrupt = results.iter().any(|r| r.verdict.is_corrupt());
    if json {
        out.json(results)?;
        return Ok(corrupt);
    }
    for r in results {
        let verdict = match &r.verdict {
            SegmentVerdict::Ok => "ok".to_string(),
            SegmentVerdict::Unlisted => {
                "not part of the store (left by an interrupted operation; removed on the next open)"
                    .to_string()
            }
            SegmentVerdict::TornTail {
                offset,
                bytes,
                kind,
            } => format!(
                "damaged tail at offset {offset} ({bytes} bytes, cut on the next open and kept beside the segment): {}",
                kind.explain()
            ),
            SegmentVerdict::Corrupt {
                offset,
                reason,
                damaged_ranges,
            } => {
                format!("CORRUPT at offset {offset}: {reason} ({damaged_ranges} damaged range(s))")
            }
        };
        outln!(
            out,
            "{}: {} bytes, {} records, {} commands: {verdict}",
            r.file,
            r.bytes,
            r.records,
            r.commands
        )?;
    }
    outln!(
        out,
        "{} segment(s) checked, {}",
        results.len(),
        if corrupt {
            "corruption found"
        } else {
            "no corruption"
        }
    )?;
    Ok(corrupt)
}
