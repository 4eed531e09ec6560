//! `atrest status`: the header's facts, without a key.

use std::path::Path;

use anyhow::{bail, Context};
use volume::backend::FileBackend;
use volume::convert::Found;
use volume::text::shown;
use volume::volume::cipher_text;

pub fn run(device: &Path, header: Option<&Path>, json: bool) -> anyhow::Result<()> {
    let file =
        std::fs::File::open(device).with_context(|| format!("opening {}", device.display()))?;
    let dev = FileBackend::new(file);
    let hdr = match header {
        Some(h) => Some(FileBackend::new(
            std::fs::File::open(h).with_context(|| format!("opening {}", h.display()))?,
        )),
        None => None,
    };
    let result = match &hdr {
        Some(h) => volume::volume::status_detached(h, &dev),
        None => volume::volume::status(&dev),
    };
    let s = match result {
        Ok(s) => s,
        Err(e) => {
            // No header, but maybe a conversion's park record: say what to run.
            if let Ok(Found::InProgress(p)) =
                volume::convert::inspect(volume::convert::Devices::attached(&dev))
            {
                bail!(
                    "{}: an atrest {} was interrupted while the device had no header (KMIP key {}); run `{}` again to finish it",
                    device.display(),
                    p.kind.noun(),
                    if p.key_uid.is_empty() { "not needed".into() } else { shown(&p.key_uid) },
                    p.kind.command()
                );
            }
            return Err(e).with_context(|| format!("reading {}", device.display()));
        }
    };
    if json {
        println!("{}", serde_json::to_string(&s)?);
        return Ok(());
    }
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
