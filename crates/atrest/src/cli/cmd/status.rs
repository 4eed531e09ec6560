//! `atrest status`: the header's facts, without a key.

use std::path::Path;

use anyhow::{bail, Context};
use volume::backend::FileBackend;
use volume::convert::Found;

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
                let what = p.kind.as_str();
                bail!(
                    "{}: an atrest {what} was interrupted while the device had no header (KMIP key {}); run `atrest {what}` again to finish it",
                    device.display(),
                    if p.key_uid.is_empty() { "not needed" } else { &p.key_uid }
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
    if let Some((kind, done, total)) = &s.conversion {
        println!(
            "conversion    {kind}: {done} of {total} bytes done, interrupted or running; `atrest {kind}` finishes it"
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
