//! `atrest status`: the header's facts, without a key.

use std::path::Path;

use service::device::Location;
use volume::volume::cipher_text;

pub fn run(device: &Path, header: Option<&Path>, json: bool) -> anyhow::Result<()> {
    let loc = Location {
        path: device.to_owned(),
        header: header.map(Path::to_owned),
    };
    let s = match service::ops::status::status(&loc) {
        Ok(s) => s,
        // Not an atrest volume atrest can open, but perhaps LUKS2 all the same: describe
        // it, and say why atrest does not take it.
        Err(e) => match service::ops::status::describe(&loc) {
            Ok(view) => return foreign(device, &view, &e.to_string(), json),
            Err(_) => return Err(e.into()),
        },
    };
    if json {
        println!("{}", serde_json::to_string(&s)?);
        return Ok(());
    }
    // Every string below that came from the header was escaped by `status`.
    println!("device        {}", device.display());
    println!(
        "format        LUKS2 (atrest), uuid {}, epoch {}",
        s.uuid, s.seqid
    );
    println!("cipher        {} = {}", cipher_text(s.key_bits), s.cipher);
    println!("sector size   {} bytes", s.sector_size);
    println!("key mode      {}", s.key_mode);
    println!("KMIP key      {}", s.key_uid);
    if let Some(h) = &s.server_hint {
        println!("created on    {h} (a hint: the servers used come from the configuration)");
    }
    println!(
        "data          {} bytes at offset {}",
        s.data_size, s.data_offset
    );
    if s.iv_tweak != 0 {
        println!(
            "iv tweak      {} (sector tweaks start at {} instead of 0; atrest never writes this: check the header was not changed)",
            s.iv_tweak, s.iv_tweak
        );
    }
    if let Some(c) = &s.conversion {
        println!(
            "conversion    {}: {} of {} bytes done, interrupted or running; `{}` finishes it",
            c.kind.noun(),
            c.done,
            c.total,
            c.kind.command()
        );
    }
    if !s.requirements.is_empty() {
        println!(
            "requirements  {} (a conversion is in progress)",
            s.requirements.join(", ")
        );
    }
    if let Some(d) = &s.damaged_copy {
        println!("WARNING       damaged header copy, the other copy is in use: {d}");
    }
    Ok(())
}

/// A LUKS2 volume `status` does not take (cryptsetup's, or one atrest will not open). A
/// volume that is not atrest's is a state, exit 0; one that carries atrest's token and
/// that atrest refuses is a fault, exit 1, after the description.
fn foreign(
    device: &Path,
    v: &volume::describe::Luks2View,
    why: &str,
    json: bool,
) -> anyhow::Result<()> {
    let managed = v.atrest_key_uid.is_some();
    let opens = v.refused.is_none() && managed;
    let verdict = || -> anyhow::Result<()> {
        if managed {
            anyhow::bail!(
                "atrest does not open this volume: {}",
                v.refused.as_deref().unwrap_or(why)
            );
        }
        Ok(())
    };
    if json {
        let out = serde_json::json!({
            "luks2": v,
            "managed_by_atrest": managed,
            "atrest_opens": opens,
            "why": why,
        });
        println!("{out}");
        return verdict();
    }
    println!("device        {}", device.display());
    println!(
        "format        LUKS2, uuid {}, epoch {}, {} bytes of metadata per copy, {} bytes of keyslots",
        v.uuid, v.seqid, v.metadata_size, v.keyslots_size
    );
    if !v.label.is_empty() {
        println!("label         {}", v.label);
    }
    match &v.atrest_key_uid {
        Some(uid) => println!("managed by    atrest (KMIP key {uid})"),
        None => println!("managed by    not atrest: no atrest token (a volume made by cryptsetup, or by another tool)"),
    }
    println!("atrest opens  no: {}", v.refused.as_deref().unwrap_or(why));
    for k in &v.keyslots {
        let mut parts = vec![k.kind.clone()];
        if let (Some(b), "luks2") = (k.key_bits, k.kind.as_str()) {
            parts.push(format!("{b}-bit key"));
        }
        if let Some(kdf) = &k.kdf {
            parts.push(kdf.clone());
        }
        println!("keyslot {:<5} {}", k.id, parts.join(", "));
    }
    for (id, kind, slots) in &v.tokens {
        println!("token {:<7} {kind} (keyslots {})", id, list(slots));
    }
    for g in &v.segments {
        let mut parts = vec![g.kind.clone()];
        if let Some(c) = &g.cipher {
            parts.push(c.clone());
        }
        if let Some(ss) = g.sector_size {
            parts.push(format!("{ss}-byte sectors"));
        }
        parts.push(format!("offset {}", g.offset));
        parts.push(format!("size {}", g.size));
        if !g.flags.is_empty() {
            parts.push(format!("flags {}", g.flags.join(" ")));
        }
        println!("segment {:<5} {}", g.id, parts.join(", "));
    }
    for (id, kind, slots, segs) in &v.digests {
        println!(
            "digest {:<6} {kind} (keyslots {}; segments {})",
            id,
            list(slots),
            list(segs)
        );
    }
    if !v.requirements.is_empty() {
        println!("requirements  {}", v.requirements.join(", "));
    }
    if let Some(r) = &v.reencryption {
        println!(
            "reencryption  cryptsetup {} in progress, {}, resilience {}: {} of {} bytes done. Finish it with `cryptsetup reencrypt --resume-only {}`; atrest does not open the volume until then",
            r.mode,
            r.direction,
            r.resilience,
            r.done,
            r.total,
            device.display()
        );
    }
    if let Some(d) = &v.damaged_copy {
        println!("WARNING       damaged header copy, the other copy is in use: {d}");
    }
    verdict()
}

fn list(v: &[String]) -> String {
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}
