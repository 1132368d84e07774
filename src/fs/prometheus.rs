//! `llmfs stats --prometheus`: the statistics of [`super::report`] (one flat JSON
//! object) as the Prometheus text exposition format, version 0.0.4, which
//! node_exporter's textfile collector reads (`*.prom` files).
//!
//! Every metric is named `llmfs_…` in base units (bytes, seconds), counters end in
//! `_total`, and every sample carries one label saying where the figures come from:
//! `mountpoint` (the daemon's live figures) or `store` (an unmounted store, read
//! directly: only the store's part). A figure missing from the object (a daemon of an
//! older version, or an unmounted store) is left out rather than reported as 0.
//! `llmfs_mounted` is always there: 0 for a store, and for a mount point with no live
//! daemon behind it ([`Origin::NotMounted`]), so that a monitoring system sees a
//! filesystem go down as a value rather than as missing series.
//!
//! Counters count since the daemon started; Prometheus' `rate()` handles the reset at a
//! restart. Throughputs are left to PromQL, from pairs of counters:
//! `rate(llmfs_compaction_bytes_total[5m]) / rate(llmfs_compaction_seconds_total[5m])`.
//!
//! The text is written here rather than through a client library: the figures are a
//! snapshot of another process's counters, where client libraries are built around
//! registries of live metric objects (prometheus-client has no constant histogram), and
//! the format is a simple line format.

use crate::frame::Codec;
use serde_json::{Map, Value};
use std::fmt::Write;

/// Where the figures come from: the label every sample carries.
#[derive(Clone, Copy, Debug)]
pub enum Origin<'a> {
    /// The live figures of the daemon serving this mount point.
    Mount(&'a str),
    /// An unmounted store directory, read directly.
    Store(&'a str),
    /// A mount point where no llmfs daemon serves: only `llmfs_mounted 0`.
    NotMounted(&'a str),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// Where a family's samples come from in the statistics object.
enum Source {
    /// One sample: the number at this key.
    Key(&'static str),
    /// One sample: the number at this key times a factor (milliseconds to seconds).
    Scaled(&'static str, f64),
    /// One sample per codec, labelled `codec`: the numbers at this prefix followed by
    /// the codec's name (`frame_bytes_llm`).
    PerCodec(&'static str),
    /// One sample per key, labelled with this label's value.
    Labelled(&'static str, &'static [(&'static str, &'static str)]),
    /// A histogram: the count, the sum (seconds) and an object of cumulative counts by
    /// upper bound.
    Histogram {
        count: &'static str,
        sum: &'static str,
        buckets: &'static str,
    },
}

struct Family {
    name: &'static str,
    kind: Kind,
    help: &'static str,
    source: Source,
}

const fn family(name: &'static str, kind: Kind, help: &'static str, source: Source) -> Family {
    Family {
        name,
        kind,
        help,
        source,
    }
}

use Kind::{Counter, Gauge};
use Source::{Key, Labelled, PerCodec, Scaled};

/// Every metric, in the order printed; the store's part first.
const FAMILIES: &[Family] = &[
    family(
        "llmfs_files",
        Gauge,
        "Regular files in the store.",
        Key("files"),
    ),
    family(
        "llmfs_directories",
        Gauge,
        "Directories in the store.",
        Key("directories"),
    ),
    family(
        "llmfs_logical_bytes",
        Gauge,
        "Sum of the sizes of the regular files: the bytes readers see.",
        Key("logical_bytes"),
    ),
    family(
        "llmfs_stored_bytes",
        Gauge,
        "Bytes of the chunks' frames in every codec: what the files cost before the \
         database's own overhead.",
        Key("stored_bytes"),
    ),
    family(
        "llmfs_disk_bytes",
        Gauge,
        "Bytes the store's directory takes on disk (allocated blocks, as du counts them). \
         Not split by codec: the database's pages mix them.",
        Key("disk_bytes"),
    ),
    family(
        "llmfs_metadata_bytes",
        Gauge,
        "Bytes of keys and values other than frames: inodes, names, xattrs, tables.",
        Key("metadata_bytes"),
    ),
    family(
        "llmfs_database_file_bytes",
        Gauge,
        "Bytes of the database's files.",
        Key("db_file_bytes"),
    ),
    family(
        "llmfs_database_free_bytes",
        Gauge,
        "Bytes of free space inside the database's files.",
        Key("db_free_bytes"),
    ),
    family(
        "llmfs_database_used_bytes",
        Gauge,
        "Bytes of the database's pages in use (the data's cost, free pages aside).",
        Key("db_used_bytes"),
    ),
    family(
        "llmfs_chunks",
        Gauge,
        "Chunks stored in each codec (lost: chunks a salvage marked as lost).",
        PerCodec("chunks_"),
    ),
    family(
        "llmfs_chunk_logical_bytes",
        Gauge,
        "Plaintext bytes of the chunks stored in each codec.",
        PerCodec("plain_bytes_"),
    ),
    family(
        "llmfs_chunk_stored_bytes",
        Gauge,
        "Frame bytes of the chunks stored in each codec.",
        PerCodec("frame_bytes_"),
    ),
    family(
        "llmfs_extents",
        Gauge,
        "Extents holding the settled chunks.",
        Key("extents"),
    ),
    family(
        "llmfs_bad_chunks",
        Gauge,
        "Chunks or extents that cannot be parsed (damage: see llmfs fsck).",
        Key("bad_chunks"),
    ),
    family(
        "llmfs_pending_chunks",
        Gauge,
        "Chunks written and not yet settled by the compactor: awaiting the model.",
        Key("pending_chunks"),
    ),
    family(
        "llmfs_pending_bytes",
        Gauge,
        "Plaintext bytes of the pending chunks.",
        Key("pending_bytes"),
    ),
    family(
        "llmfs_pending_stored_bytes",
        Gauge,
        "Frame bytes of the pending chunks (as the fast tier stored them).",
        Key("pending_frame_bytes"),
    ),
    family(
        "llmfs_stats_age_seconds",
        Gauge,
        "Age of the walk of the store that the store's figures come from.",
        Scaled("stats_age_ms", 1e-3),
    ),
    family(
        "llmfs_stats_walks_total",
        Counter,
        "Walks of the whole store made for statistics.",
        Key("stats_walks"),
    ),
    family(
        "llmfs_compaction_enabled",
        Gauge,
        "1 when the compactor runs (a model is attached and compact is on).",
        Key("compact"),
    ),
    family(
        "llmfs_cold_after_seconds",
        Gauge,
        "A chunk not written for this long is handed to the compactor.",
        Key("cold_after_s"),
    ),
    family(
        "llmfs_compaction_chunks_total",
        Counter,
        "Chunks the compactor coded, by outcome: llm (settled as an LLM frame), kept (the \
         model did not win: settled as it was), dropped (the chunk changed meanwhile), \
         skipped (its file's policy, user.llmfs.compress=fast|none, keeps it from the model: \
         settled as it was).",
        Labelled(
            "outcome",
            &[
                ("llm", "compacted_chunks_llm"),
                ("kept", "compacted_chunks_kept"),
                ("dropped", "compaction_dropped"),
                ("skipped", "compacted_chunks_skipped"),
            ],
        ),
    ),
    family(
        "llmfs_compaction_bytes_total",
        Counter,
        "Plaintext bytes of the chunks the compactor settled.",
        Key("compacted_plain_bytes"),
    ),
    family(
        "llmfs_compaction_seconds_total",
        Counter,
        "Wall time during which the compactor was coding chunks (on any lane).",
        Key("compaction_busy_s"),
    ),
    family(
        "llmfs_compaction_input_frame_bytes_total",
        Counter,
        "Frame bytes of the chunks the compactor settled, before.",
        Key("compacted_frame_bytes_before"),
    ),
    family(
        "llmfs_compaction_output_frame_bytes_total",
        Counter,
        "Frame bytes of the chunks the compactor settled, after.",
        Key("compacted_frame_bytes_after"),
    ),
    family(
        "llmfs_model_loaded",
        Gauge,
        "1 when a language model is attached to the mount.",
        Key("model"),
    ),
    family(
        "llmfs_model_idle",
        Gauge,
        "1 when no model job is queued or running.",
        Key("model_idle"),
    ),
    family(
        "llmfs_model_lanes",
        Gauge,
        "Lanes (model contexts) of the model pool.",
        Key("model_lanes"),
    ),
    family(
        "llmfs_model_decodes_total",
        Counter,
        "Chunks the model decoded (for reads, edits and prefetches).",
        Key("model_decodes"),
    ),
    family(
        "llmfs_model_wide_decodes_total",
        Counter,
        "Decodes that ran on lane 0's wide context (a lone read on an idle pool).",
        Key("model_wide_decodes"),
    ),
    family(
        "llmfs_model_decode_seconds_total",
        Counter,
        "Time lanes spent decoding chunks, queueing excluded.",
        Key("model_decode_s"),
    ),
    family(
        "llmfs_model_decode_bytes_total",
        Counter,
        "Plaintext bytes the model decoded.",
        Key("model_decoded_bytes"),
    ),
    family(
        "llmfs_model_decode_max_seconds",
        Gauge,
        "The longest decode of a chunk since the daemon started.",
        Scaled("decode_ms_max", 1e-3),
    ),
    family(
        "llmfs_model_encodes_total",
        Counter,
        "Chunks the model encoded (compaction, sync_llm, the canary).",
        Key("model_encodes"),
    ),
    family(
        "llmfs_model_encode_seconds_total",
        Counter,
        "Time lanes spent encoding chunks (the check by decoding included).",
        Key("model_encode_s"),
    ),
    family(
        "llmfs_model_encode_bytes_total",
        Counter,
        "Plaintext bytes the model encoded.",
        Key("model_encoded_bytes"),
    ),
    family(
        "llmfs_model_tokens_total",
        Counter,
        "Tokens the model evaluated, every lane.",
        Key("model_tokens"),
    ),
    family(
        "llmfs_verify_failures_total",
        Counter,
        "LLM frames that decoded to other bytes than were encoded, caught by the check \
         after each encode (the fast frame was kept).",
        Key("verify_failures"),
    ),
    family(
        "llmfs_model_cancelled_total",
        Counter,
        "Model jobs stopped because a reader needed the lane (tried again later).",
        Key("model_cancelled"),
    ),
    family(
        "llmfs_model_prefetches_total",
        Counter,
        "Chunks decoded ahead of a reader.",
        Key("prefetches"),
    ),
    family(
        "llmfs_model_prefetch_hits_total",
        Counter,
        "Reads served from a prefetched chunk.",
        Key("prefetch_hits"),
    ),
    family(
        "llmfs_cold_read_seconds",
        Kind::Histogram,
        "Time a request (a read, or an edit of an LLM-coded chunk) waited for the model to \
         decode a chunk it needed, queueing included.",
        Source::Histogram {
            count: "cold_reads",
            sum: "cold_read_s_sum",
            buckets: "cold_read_buckets",
        },
    ),
    family(
        "llmfs_cache_hits_total",
        Counter,
        "Chunks of reads served from the cache of decoded chunks.",
        Key("cache_hits"),
    ),
    family(
        "llmfs_cache_misses_total",
        Counter,
        "Chunks of reads loaded from the store (and decoded).",
        Key("cache_misses"),
    ),
    family(
        "llmfs_cache_bytes",
        Gauge,
        "Bytes the cache of decoded chunks holds.",
        Key("cache_bytes"),
    ),
    family(
        "llmfs_cache_model_decoded_bytes",
        Gauge,
        "Bytes of the cache holding chunks the model decoded (evicted last).",
        Key("cache_model_decoded_bytes"),
    ),
    family(
        "llmfs_cache_capacity_bytes",
        Gauge,
        "Bytes the cache of decoded chunks may hold.",
        Key("cache_capacity_bytes"),
    ),
    family(
        "llmfs_nodes_in_memory",
        Gauge,
        "Inodes the daemon holds in memory.",
        Key("nodes_in_memory"),
    ),
];

/// Every key of the statistics object that some metric reads.
#[cfg(test)]
pub(crate) fn keys_read() -> std::collections::HashSet<String> {
    FAMILIES
        .iter()
        .flat_map(|f| match &f.source {
            Key(k) | Scaled(k, _) => vec![k.to_string()],
            PerCodec(p) => Codec::ALL
                .iter()
                .map(|c| format!("{p}{}", c.name()))
                .collect(),
            Labelled(_, keys) => keys.iter().map(|(_, k)| k.to_string()).collect(),
            Source::Histogram {
                count,
                sum,
                buckets,
            } => vec![count.to_string(), sum.to_string(), buckets.to_string()],
        })
        .collect()
}

/// `m` (what `llmfs stats --json` prints) in the text exposition format.
pub fn render(m: &Map<String, Value>, origin: Origin<'_>) -> String {
    let (label, path, mounted) = match origin {
        Origin::Mount(p) => ("mountpoint", p, 1),
        Origin::Store(p) => ("store", p, 0),
        Origin::NotMounted(p) => ("mountpoint", p, 0),
    };
    let base = format!("{label}=\"{}\"", escape_label(path));
    let mut out = String::new();
    header(
        &mut out,
        "llmfs_mounted",
        Gauge,
        "1: the live figures of a mounted filesystem's daemon. 0: no daemon serves this \
         mount point, or (labelled store) an unmounted store, read directly.",
    );
    let _ = writeln!(out, "llmfs_mounted{{{base}}} {mounted}");
    if matches!(origin, Origin::NotMounted(_)) {
        return out;
    }
    for f in FAMILIES {
        let samples = samples(f, m);
        if samples.is_empty() {
            continue;
        }
        header(&mut out, f.name, f.kind, f.help);
        for (suffix, labels, value) in samples {
            let sep = if labels.is_empty() { "" } else { "," };
            let _ = writeln!(out, "{}{suffix}{{{base}{sep}{labels}}} {value}", f.name);
        }
    }
    out
}

fn header(out: &mut String, name: &str, kind: Kind, help: &str) {
    let _ = writeln!(out, "# HELP {name} {}", escape_help(help));
    let _ = writeln!(out, "# TYPE {name} {}", kind.name());
}

/// (name suffix, extra labels, value) of each sample of `f` found in `m`.
fn samples(f: &Family, m: &Map<String, Value>) -> Vec<(&'static str, String, String)> {
    let one = |key: &str| m.get(key).and_then(number);
    match &f.source {
        Key(k) => one(k).map(|v| ("", String::new(), v)).into_iter().collect(),
        Scaled(k, by) => m
            .get(*k)
            .and_then(Value::as_f64)
            // To the microsecond: 12345.67 ms is 12.34567 s, not 12.345670000000002.
            .map(|v| ("", String::new(), float((v * by * 1e6).round() / 1e6)))
            .into_iter()
            .collect(),
        PerCodec(prefix) => Codec::ALL
            .iter()
            .filter_map(|c| {
                let v = one(&format!("{prefix}{}", c.name()))?;
                Some(("", format!("codec=\"{}\"", c.name()), v))
            })
            .collect(),
        Labelled(label, keys) => keys
            .iter()
            .filter_map(|(value, key)| Some(("", format!("{label}=\"{value}\""), one(key)?)))
            .collect(),
        Source::Histogram {
            count,
            sum,
            buckets,
        } => {
            let (Some(count), Some(sum), Some(Value::Object(b))) =
                (one(count), one(sum), m.get(*buckets))
            else {
                return Vec::new();
            };
            let mut bounds: Vec<(f64, &String, String)> = b
                .iter()
                .filter_map(|(le, n)| Some((le.parse::<f64>().ok()?, le, number(n)?)))
                .filter(|(le, ..)| le.is_finite())
                .collect();
            bounds.sort_by(|a, b| a.0.total_cmp(&b.0));
            let mut out: Vec<_> = bounds
                .into_iter()
                .map(|(_, le, n)| ("_bucket", format!("le=\"{}\"", escape_label(le)), n))
                .collect();
            out.push(("_bucket", "le=\"+Inf\"".into(), count.clone()));
            out.push(("_sum", String::new(), sum));
            out.push(("_count", String::new(), count));
            out
        }
    }
}

/// A JSON number as a sample value: integers as they are, others as Go's ParseFloat
/// reads them.
fn number(v: &Value) -> Option<String> {
    if let Some(n) = v.as_u64() {
        return Some(n.to_string());
    }
    if let Some(n) = v.as_i64() {
        return Some(n.to_string());
    }
    v.as_f64().map(float)
}

fn float(x: f64) -> String {
    if x.is_nan() {
        "NaN".into()
    } else if x.is_infinite() {
        if x > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        // Rust prints no exponent and the shortest digits that read back the same.
        format!("{x}")
    }
}

/// A label value: backslash, double quote and newline escaped.
fn escape_label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// HELP text: backslash and newline escaped.
fn escape_help(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, HashSet};

    /// Statistics as a daemon gives them (`llmfs stats --json`), with every figure.
    fn live() -> Map<String, Value> {
        let v: Value = serde_json::from_str(
            r#"{
            "files": 3, "directories": 2, "logical_bytes": 300000, "stored_bytes": 41000,
            "disk_bytes": 1200000, "metadata_bytes": 900, "db_file_bytes": 1100000,
            "db_free_bytes": 4096, "db_used_bytes": 57344, "pending_chunks": 2, "pending_bytes": 131072,
            "pending_frame_bytes": 30000, "extents": 4,
            "chunks_raw": 1, "frame_bytes_raw": 1000, "plain_bytes_raw": 990,
            "chunks_zstd": 2, "frame_bytes_zstd": 30000, "plain_bytes_zstd": 131072,
            "chunks_llm": 3, "frame_bytes_llm": 10000, "plain_bytes_llm": 167938,
            "chunks_lost": 0, "frame_bytes_lost": 0, "plain_bytes_lost": 0,
            "bad_chunks": 0, "ratio_stored": 7.32, "ratio_disk": 0.25,
            "codec_profile": "0102", "codec": "coder 2", "primer": "v1",
            "stats_age_ms": 1500, "stats_walks": 7, "compact": 1, "cold_after_s": 300,
            "compacted_chunks_llm": 3, "compacted_chunks_kept": 1, "compacted_chunks_skipped": 0,
            "compacted_plain_bytes": 230000, "compacted_frame_bytes_before": 60000,
            "compacted_frame_bytes_after": 11000, "compaction_dropped": 0,
            "compaction_busy_s": 61.25, "compaction_bytes_per_s": 3755.1,
            "model": 1, "model_idle": 0, "model_lanes": 2, "model_decodes": 5,
            "model_wide_decodes": 1, "model_decode_s": 45.5, "model_decoded_bytes": 327680,
            "decode_ms_avg": 9100.0, "decode_ms_max": 12345.67, "model_encodes": 4,
            "model_encode_s": 120.000001, "model_encoded_bytes": 230000,
            "model_tokens": 70000, "verify_failures": 1, "model_cancelled": 2,
            "prefetches": 1, "prefetch_hits": 1, "cold_reads": 4, "cold_read_s_sum": 30.5,
            "cold_read_buckets": {
                "0.01": 1, "0.05": 1, "0.1": 1, "0.25": 1, "0.5": 1, "1": 1, "2.5": 1,
                "5": 1, "10": 3, "20": 4, "40": 4, "80": 4
            },
            "nodes_in_memory": 6, "cache_bytes": 200000, "cache_model_decoded_bytes": 150000,
            "cache_capacity_bytes": 67108864, "cache_hits": 10, "cache_misses": 5
        }"#,
        )
        .unwrap();
        match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    /// One family as parsed: its type, and its samples by (name, labels).
    #[derive(Debug, Default)]
    struct Parsed {
        kind: String,
        help: bool,
        samples: BTreeMap<(String, BTreeMap<String, String>), f64>,
    }

    fn valid_name(s: &str) -> bool {
        let mut c = s.chars();
        c.next()
            .is_some_and(|f| f.is_ascii_alphabetic() || f == '_' || f == ':')
            && c.all(|x| x.is_ascii_alphanumeric() || x == '_' || x == ':')
    }

    fn valid_label(s: &str) -> bool {
        valid_name(s) && !s.contains(':') && !s.starts_with("__")
    }

    /// `{k="v",…}` (after the metric name) into labels, and what follows.
    fn parse_labels(s: &str) -> (BTreeMap<String, String>, &str) {
        let mut labels = BTreeMap::new();
        let Some(mut rest) = s.strip_prefix('{') else {
            return (labels, s);
        };
        loop {
            if let Some(r) = rest.strip_prefix('}') {
                return (labels, r);
            }
            let eq = rest.find('=').expect("label without =");
            let name = &rest[..eq];
            assert!(valid_label(name), "label name {name:?}");
            rest = rest[eq + 1..]
                .strip_prefix('"')
                .expect("label value quoted");
            let mut value = String::new();
            let mut chars = rest.char_indices();
            let end = loop {
                match chars.next().expect("unterminated label value") {
                    (i, '"') => break i,
                    (_, '\\') => match chars.next().expect("escape").1 {
                        '\\' => value.push('\\'),
                        '"' => value.push('"'),
                        'n' => value.push('\n'),
                        other => panic!("bad escape \\{other}"),
                    },
                    (_, ch) => value.push(ch),
                }
            };
            assert!(
                labels.insert(name.to_string(), value).is_none(),
                "label {name} twice"
            );
            rest = &rest[end + 1..];
            rest = rest.strip_prefix(',').unwrap_or(rest);
        }
    }

    /// Parses the exposition format strictly enough to catch what Prometheus refuses:
    /// names, labels, values, HELP and TYPE before a family's samples and once each, a
    /// family's samples together, sample names that belong to their family's type, no
    /// series twice.
    fn parse(text: &str) -> BTreeMap<String, Parsed> {
        let mut families: BTreeMap<String, Parsed> = BTreeMap::new();
        let mut current: Option<String> = None;
        let mut done = HashSet::new();
        assert!(text.ends_with('\n'), "the last line ends");
        for line in text.lines() {
            assert!(!line.is_empty(), "no empty lines");
            if let Some(rest) = line.strip_prefix("# ") {
                let mut parts = rest.splitn(3, ' ');
                let (what, name, arg) = (
                    parts.next().unwrap(),
                    parts.next().unwrap(),
                    parts.next().unwrap_or(""),
                );
                assert!(valid_name(name), "{line}");
                if current.as_deref() != Some(name) {
                    if let Some(c) = current.take() {
                        done.insert(c);
                    }
                    assert!(!done.contains(name), "family {name} split: {line}");
                    current = Some(name.to_string());
                }
                let f = families.entry(name.to_string()).or_default();
                assert!(f.samples.is_empty(), "HELP/TYPE after samples: {line}");
                match what {
                    "HELP" => {
                        assert!(!f.help, "two HELP lines for {name}");
                        assert!(!arg.is_empty(), "empty HELP for {name}");
                        f.help = true;
                    }
                    "TYPE" => {
                        assert!(f.kind.is_empty(), "two TYPE lines for {name}");
                        assert!(
                            ["counter", "gauge", "histogram", "summary", "untyped"].contains(&arg),
                            "{line}"
                        );
                        f.kind = arg.to_string();
                    }
                    _ => panic!("unknown comment: {line}"),
                }
                continue;
            }
            let name_end = line.find(['{', ' ']).expect("sample has a value");
            let name = &line[..name_end];
            assert!(valid_name(name), "{line}");
            let (labels, rest) = parse_labels(&line[name_end..]);
            let value = rest.strip_prefix(' ').expect("one space before the value");
            assert!(!value.contains(' '), "no timestamps here: {line}");
            let v: f64 = match value {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                "NaN" => f64::NAN,
                _ => value.parse().unwrap_or_else(|_| panic!("value of {line}")),
            };
            let fam = current.clone().expect("a sample before any TYPE");
            let f = families.get_mut(&fam).unwrap();
            let ok = match f.kind.as_str() {
                "histogram" => [
                    format!("{fam}_bucket"),
                    format!("{fam}_sum"),
                    format!("{fam}_count"),
                ]
                .contains(&name.to_string()),
                "counter" => name == fam && fam.ends_with("_total"),
                _ => name == fam,
            };
            assert!(ok, "sample {name} in family {fam} ({})", f.kind);
            if f.kind == "counter" {
                assert!(v >= 0.0, "{line}");
            }
            assert!(
                f.samples.insert((name.to_string(), labels), v).is_none(),
                "series twice: {line}"
            );
        }
        for (name, f) in &families {
            assert!(f.help && !f.kind.is_empty(), "{name} lacks HELP or TYPE");
            assert!(!f.samples.is_empty(), "{name} has no samples");
        }
        families
    }

    fn value(fams: &BTreeMap<String, Parsed>, name: &str, extra: &[(&str, &str)]) -> f64 {
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|f| fams.contains_key(*f)))
            .unwrap_or(name);
        let mut labels: BTreeMap<String, String> = [("mountpoint", "/srv/a \"b\"\\c")]
            .iter()
            .chain(extra)
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        if !fams[family]
            .samples
            .keys()
            .any(|(_, l)| l.contains_key("mountpoint"))
        {
            labels.remove("mountpoint");
            labels.insert("store".into(), "/var/lib/llmfs/a".into());
        }
        *fams[family]
            .samples
            .get(&(name.to_string(), labels))
            .unwrap_or_else(|| panic!("no {name} {extra:?} in {:?}", fams[family]))
    }

    #[test]
    fn live_figures_are_valid_exposition_with_every_family() {
        let text = render(&live(), Origin::Mount("/srv/a \"b\"\\c"));
        let fams = parse(&text);
        assert_eq!(
            fams.len(),
            FAMILIES.len() + 1,
            "every family, and llmfs_mounted"
        );
        for f in FAMILIES {
            assert!(fams.contains_key(f.name), "{} missing:\n{text}", f.name);
            assert!(valid_name(f.name) && f.name.starts_with("llmfs_"));
            assert_eq!(f.kind == Counter, f.name.ends_with("_total"), "{}", f.name);
        }
        let v = |name: &str, extra: &[(&str, &str)]| value(&fams, name, extra);
        assert_eq!(v("llmfs_mounted", &[]), 1.0);
        assert_eq!(v("llmfs_logical_bytes", &[]), 300_000.0);
        assert_eq!(v("llmfs_disk_bytes", &[]), 1_200_000.0);
        assert_eq!(v("llmfs_chunk_stored_bytes", &[("codec", "llm")]), 10_000.0);
        assert_eq!(
            v("llmfs_chunk_logical_bytes", &[("codec", "zstd")]),
            131_072.0
        );
        assert_eq!(v("llmfs_chunks", &[("codec", "raw")]), 1.0);
        assert_eq!(v("llmfs_chunks", &[("codec", "lost")]), 0.0);
        assert_eq!(v("llmfs_pending_chunks", &[]), 2.0);
        assert_eq!(v("llmfs_pending_bytes", &[]), 131_072.0);
        assert_eq!(v("llmfs_stats_age_seconds", &[]), 1.5);
        assert_eq!(
            v("llmfs_compaction_chunks_total", &[("outcome", "kept")]),
            1.0
        );
        assert_eq!(v("llmfs_compaction_bytes_total", &[]), 230_000.0);
        assert_eq!(v("llmfs_compaction_seconds_total", &[]), 61.25);
        assert_eq!(v("llmfs_model_decode_bytes_total", &[]), 327_680.0);
        assert_eq!(v("llmfs_model_decode_seconds_total", &[]), 45.5);
        assert_eq!(v("llmfs_model_encode_seconds_total", &[]), 120.000_001);
        assert!(
            text.contains("_decode_max_seconds{mountpoint=\"/srv/a \\\"b\\\"\\\\c\"} 12.34567\n")
        );
        assert_eq!(v("llmfs_verify_failures_total", &[]), 1.0);
        assert_eq!(v("llmfs_cache_hits_total", &[]), 10.0);
        assert_eq!(v("llmfs_cache_misses_total", &[]), 5.0);
        assert_eq!(v("llmfs_cold_read_seconds_count", &[]), 4.0);
        assert_eq!(v("llmfs_cold_read_seconds_sum", &[]), 30.5);
        // Buckets in ascending order of their bounds (the object's keys sort as
        // strings: "10" before "2.5"), cumulative, up to +Inf = the count.
        let les: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("llmfs_cold_read_seconds_bucket"))
            .map(|l| l.split("le=\"").nth(1).unwrap().split('"').next().unwrap())
            .collect();
        assert_eq!(
            les,
            [
                "0.01", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "20", "40", "80",
                "+Inf"
            ]
        );
        assert_eq!(v("llmfs_cold_read_seconds_bucket", &[("le", "5")]), 1.0);
        assert_eq!(v("llmfs_cold_read_seconds_bucket", &[("le", "10")]), 3.0);
        assert_eq!(v("llmfs_cold_read_seconds_bucket", &[("le", "+Inf")]), 4.0);
        assert!(
            !text.contains("ratio") && !text.contains("codec_profile"),
            "derived figures and strings are left to PromQL and `llmfs stats`"
        );
    }

    #[test]
    fn the_checker_refuses_what_prometheus_refuses() {
        let ok = "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"1\"} 2\n";
        parse(ok);
        for bad in [
            "# TYPE a_total counter\na_total 2\n", // no HELP
            "# HELP a_total A.\n# TYPE a_total counter\na_total 2", // no last newline
            "# HELP a A.\n# TYPE a counter\na 2\n", // counter sans _total
            "# HELP a A.\n# TYPE a gauge\na{x=\"1} 2\n", // unterminated
            "# HELP a A.\n# TYPE a gauge\na{1x=\"1\"} 2\n", // label name
            "# HELP a A.\n# TYPE a gauge\na 2\na 3\n", // series twice
            "# HELP a A.\n# TYPE a gauge\na two\n", // value
            "# HELP a A.\n# TYPE a gauge\nb 2\n",  // other family
            "# HELP a-b A.\n# TYPE a-b gauge\na-b 2\n", // name
            "# HELP h A.\n# TYPE h histogram\nh_total 2\n", // histogram sample
        ] {
            let r = std::panic::catch_unwind(|| parse(bad));
            assert!(r.is_err(), "accepted: {bad:?}");
        }
    }

    #[test]
    fn an_unmounted_store_gives_the_stores_part_labelled_store() {
        let mut m = Map::new();
        for (k, v) in live() {
            // What `llmfs stats STORE` has: the store's fields only.
            let store_part = [
                "files",
                "directories",
                "logical_bytes",
                "stored_bytes",
                "disk_bytes",
                "metadata_bytes",
                "db_file_bytes",
                "db_free_bytes",
                "db_used_bytes",
                "pending_chunks",
                "pending_bytes",
                "pending_frame_bytes",
                "extents",
                "bad_chunks",
            ];
            if store_part.contains(&k.as_str())
                || ["chunks_", "frame_bytes_", "plain_bytes_"]
                    .iter()
                    .any(|p| k.starts_with(p))
            {
                m.insert(k, v);
            }
        }
        let text = render(&m, Origin::Store("/var/lib/llmfs/a"));
        let fams = parse(&text);
        assert_eq!(value(&fams, "llmfs_mounted", &[]), 0.0);
        assert_eq!(value(&fams, "llmfs_logical_bytes", &[]), 300_000.0);
        assert!(text.contains("llmfs_logical_bytes{store=\"/var/lib/llmfs/a\"} 300000\n"));
        assert!(!fams.contains_key("llmfs_cache_hits_total"), "{text}");
        assert!(!fams.contains_key("llmfs_cold_read_seconds"), "{text}");
        assert!(!text.contains("mountpoint="));
    }

    #[test]
    fn a_mount_point_without_a_daemon_gives_mounted_0_only() {
        let text = render(&live(), Origin::NotMounted("/srv/a"));
        let fams = parse(&text);
        assert_eq!(fams.len(), 1, "{text}");
        assert!(
            text.ends_with("\nllmfs_mounted{mountpoint=\"/srv/a\"} 0\n"),
            "{text}"
        );
    }

    #[test]
    fn store_fields_of_a_real_walk_map_to_their_families() {
        let st = crate::store::stats::StoreStats {
            files: 1,
            logical_bytes: 5,
            pending_plain_bytes: 5,
            ..Default::default()
        };
        let m = super::super::report::store_fields(&st);
        let fams = parse(&render(&m, Origin::Store("/var/lib/llmfs/a")));
        // Every number of the store's part becomes a sample: no field is forgotten.
        let known = keys_read();
        for (k, v) in &m {
            if v.is_u64() {
                assert!(known.contains(k), "store field {k} has no metric");
            }
        }
        assert_eq!(value(&fams, "llmfs_pending_bytes", &[]), 5.0);
    }
}
