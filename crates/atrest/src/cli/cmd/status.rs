//! `atrest status`: the header's facts, without a key.

use std::path::Path;

use anyhow::Context;
use volume::backend::FileBackend;

pub fn run(device: &Path, json: bool) -> anyhow::Result<()> {
    let file =
        std::fs::File::open(device).with_context(|| format!("opening {}", device.display()))?;
    let s = volume::volume::status(&FileBackend::new(file))
        .with_context(|| format!("reading {}", device.display()))?;
    if json {
        println!("{}", serde_json::to_string(&s)?);
        return Ok(());
    }
    println!("device        {}", device.display());
    println!(
        "format        LUKS2 (atrest), uuid {}, epoch {}",
        s.uuid, s.seqid
    );
    println!("cipher        {} with a {}-bit key", s.cipher, s.key_bits);
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
