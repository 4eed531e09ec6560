//! What any LUKS2 header holds, for `atrest status`: every header cryptsetup reads is
//! described here (keyslots and their KDFs, tokens, segments, digests, requirements, a
//! cryptsetup reencryption in progress), whether or not atrest manages the volume or can
//! open it; when it cannot, the description says why (`validate`'s refusal), so the
//! operator learns what the volume is and what to run instead. No key is needed and
//! nothing is written. Every string that came from the header is escaped for a terminal.

use serde::Serialize;
use serde_json::Value;

use crate::backend::BlockBackend;
use crate::luks2::header;
use crate::luks2::TOKEN_TYPE;
use crate::text::shown;
use crate::volume::{geometry, VolumeError};

/// One keyslot.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct KeyslotView {
    /// Its id.
    pub id: String,
    /// `luks2`, `reencrypt`, or another type.
    pub kind: String,
    /// Bits of the key it holds (luks2 keyslots).
    pub key_bits: Option<u64>,
    /// The KDF (`pbkdf2`, `argon2id`, `argon2i`, ...), with its cost.
    pub kdf: Option<String>,
}

/// One segment.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SegmentView {
    /// Its id.
    pub id: String,
    /// `crypt`, `linear`, or another type.
    pub kind: String,
    /// Byte offset on the data device.
    pub offset: String,
    /// Bytes, or `dynamic` (to the device's end).
    pub size: String,
    /// Cipher, for crypt segments.
    pub cipher: Option<String>,
    /// Sector size, for crypt segments.
    pub sector_size: Option<u64>,
    /// Flags (`backup-final`, `in-reencryption`, ...).
    pub flags: Vec<String>,
}

/// A cryptsetup reencryption recorded in the header (`cryptsetup reencrypt`, interrupted or
/// initialised with `--init-only`), as `luksDump` shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ReencryptionView {
    /// `reencrypt`, `encrypt` or `decrypt`.
    pub mode: String,
    /// `forward` or `backward`.
    pub direction: String,
    /// How it survives a crash: `checksum`, `journal`, `datashift`, `none`, ...
    pub resilience: String,
    /// Bytes converted so far (the regular segments that already have the new layout).
    pub done: u64,
    /// Bytes in all.
    pub total: u64,
}

/// Any LUKS2 header, described.
#[derive(Debug, Clone, Serialize)]
pub struct Luks2View {
    /// Volume UUID.
    pub uuid: String,
    /// Label, if set.
    pub label: String,
    /// seqid (cryptsetup's "Epoch").
    pub seqid: u64,
    /// Binary header plus JSON area, per copy.
    pub metadata_size: u64,
    /// The keyslots area.
    pub keyslots_size: u64,
    /// Keyslots.
    pub keyslots: Vec<KeyslotView>,
    /// Tokens: id, type, keyslots.
    pub tokens: Vec<(String, String, Vec<String>)>,
    /// Segments.
    pub segments: Vec<SegmentView>,
    /// Digests: id, type, keyslots, segments.
    pub digests: Vec<(String, String, Vec<String>, Vec<String>)>,
    /// Mandatory requirements.
    pub requirements: Vec<String>,
    /// A cryptsetup reencryption in progress.
    pub reencryption: Option<ReencryptionView>,
    /// The KMIP key named by atrest's token, if the header has one.
    pub atrest_key_uid: Option<String>,
    /// Why atrest would not open this volume; `None` when it would.
    pub refused: Option<String>,
    /// A damaged header copy, if any.
    pub damaged_copy: Option<String>,
}

fn s(v: &str) -> String {
    shown(v).into_owned()
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(s).collect())
        .unwrap_or_default()
}

fn kdf_text(kdf: &Value) -> Option<String> {
    let kind = kdf.get("type")?.as_str()?;
    let num = |k: &str| {
        kdf.get(k)
            .map(Value::to_string)
            .unwrap_or_else(|| "?".into())
    };
    Some(match kind {
        "pbkdf2" => format!(
            "pbkdf2-{}, {} iterations",
            s(kdf.get("hash").and_then(Value::as_str).unwrap_or("?")),
            num("iterations")
        ),
        "argon2i" | "argon2id" => format!(
            "{kind}, time {}, memory {} KiB, {} threads",
            num("time"),
            num("memory"),
            num("cpus")
        ),
        other => s(other),
    })
}

/// The raw JSON of every object of `kind` in `raw` (the metadata as JSON: typed objects
/// and opaque ones alike), by id.
fn objects(raw: &Value, kind: &'static str) -> Vec<(String, Value)> {
    let mut v: Vec<(String, Value)> = raw
        .get(kind)
        .and_then(Value::as_object)
        .map(|o| o.iter().map(|(k, x)| (k.clone(), x.clone())).collect())
        .unwrap_or_default();
    v.sort_by_key(|(id, _)| (id.parse::<u64>().unwrap_or(u64::MAX), id.clone()));
    v
}

/// Describes the LUKS2 header on `hdr` (the data on `data`; the same device unless the
/// header is detached). Fails only when the header is not LUKS2 by cryptsetup's rules.
pub fn describe(
    hdr: &dyn BlockBackend,
    data: &dyn BlockBackend,
    detached: bool,
) -> Result<Luks2View, VolumeError> {
    let read = header::read(hdr)?;
    let h = &read.header;
    let m = &h.metadata;
    // Serialised once: every object the model keeps, typed or opaque, as JSON.
    let raw = serde_json::to_value(m).unwrap_or(Value::Null);
    let refused = crate::luks2::validate::validate(h, geometry(hdr, data, detached)?)
        .err()
        .map(|e| e.to_string());
    let data_len = data.len().unwrap_or(0);
    let keyslots: Vec<KeyslotView> = objects(&raw, "keyslots")
        .into_iter()
        .map(|(id, k)| KeyslotView {
            id: s(&id),
            kind: s(k.get("type").and_then(Value::as_str).unwrap_or("?")),
            key_bits: k.get("key_size").and_then(Value::as_u64).map(|b| b * 8),
            kdf: k.get("kdf").and_then(kdf_text),
        })
        .collect();
    let segments: Vec<SegmentView> = objects(&raw, "segments")
        .into_iter()
        .map(|(id, g)| SegmentView {
            id: s(&id),
            kind: s(g.get("type").and_then(Value::as_str).unwrap_or("?")),
            offset: s(g.get("offset").and_then(Value::as_str).unwrap_or("?")),
            size: s(g.get("size").and_then(Value::as_str).unwrap_or("?")),
            cipher: g.get("encryption").and_then(Value::as_str).map(s),
            sector_size: g.get("sector_size").and_then(Value::as_u64),
            flags: strings(g.get("flags")),
        })
        .collect();
    let reencryption = reencryption(&raw, &segments, data_len);
    let atrest_key_uid = m
        .tokens
        .values()
        .find(|t| t.kind == TOKEN_TYPE)
        .and_then(|t| t.extra.get("key_uid"))
        .and_then(Value::as_str)
        .map(s);
    Ok(Luks2View {
        uuid: s(&h.binary.uuid),
        label: s(&h.binary.label),
        seqid: h.binary.seqid,
        metadata_size: h.binary.hdr_size,
        keyslots_size: m.config.keyslots_size,
        keyslots,
        tokens: objects(&raw, "tokens")
            .into_iter()
            .map(|(id, t)| {
                let kind = s(t.get("type").and_then(Value::as_str).unwrap_or("?"));
                (s(&id), kind, strings(t.get("keyslots")))
            })
            .collect(),
        segments,
        digests: objects(&raw, "digests")
            .into_iter()
            .map(|(id, d)| {
                let kind = s(d.get("type").and_then(Value::as_str).unwrap_or("?"));
                (
                    s(&id),
                    kind,
                    strings(d.get("keyslots")),
                    strings(d.get("segments")),
                )
            })
            .collect(),
        requirements: m
            .config
            .requirements
            .as_ref()
            .map(|r| r.mandatory.iter().map(|x| s(x)).collect())
            .unwrap_or_default(),
        reencryption,
        atrest_key_uid,
        refused,
        damaged_copy: read.damaged.map(|(w, why)| format!("{w}: {why}")),
    })
}

/// The reencryption a `reencrypt` keyslot records, with its progress read off the
/// segments: the regular segments already in the final layout (bound to the digest of the
/// `backup-final` segment, or for a decryption, of its type), less the hot zone, are done.
fn reencryption(raw: &Value, segments: &[SegmentView], data_len: u64) -> Option<ReencryptionView> {
    let (_, k) = objects(raw, "keyslots")
        .into_iter()
        .find(|(_, k)| k.get("type").and_then(Value::as_str) == Some("reencrypt"))?;
    let text = |v: Option<&Value>| s(v.and_then(Value::as_str).unwrap_or("?"));
    let fin = segments
        .iter()
        .find(|g| g.flags.iter().any(|f| f == "backup-final"));
    let final_digest: Option<Vec<String>> = fin.and_then(|f| {
        objects(raw, "digests")
            .into_iter()
            .map(|(_, d)| strings(d.get("segments")))
            .find(|segs| segs.contains(&f.id))
    });
    let (mut done, mut total) = (0u64, 0u64);
    for g in segments
        .iter()
        .filter(|g| !g.flags.iter().any(|f| f.starts_with("backup-")))
    {
        let offset: u64 = g.offset.parse().unwrap_or(0);
        let size = match g.size.as_str() {
            "dynamic" => data_len.saturating_sub(offset),
            n => n.parse().unwrap_or(0),
        };
        total = total.saturating_add(size);
        let is_final = match (&final_digest, fin) {
            (Some(segs), _) => segs.contains(&g.id),
            (None, Some(f)) => f.kind == g.kind,
            (None, None) => false,
        };
        if is_final && !g.flags.iter().any(|f| f == "in-reencryption") {
            done = done.saturating_add(size);
        }
    }
    Some(ReencryptionView {
        mode: text(k.get("mode")),
        direction: text(k.get("direction")),
        resilience: text(k.get("area").and_then(|a| a.get("type"))),
        done: done.min(total),
        total,
    })
}
