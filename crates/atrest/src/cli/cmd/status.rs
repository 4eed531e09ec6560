//! `atrest status`: the header's facts, without a key.

use std::path::Path;

use service::device::Location;
use volume::volume::cipher_text;

pub fn run(device: &Path, header: Option<&Path>, json: bool) -> anyhow::Result<()> {
    let s = service::ops::status::status(&Location {
        path: device.to_owned(),
        header: header.map(Path::to_owned),
    })?;
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
