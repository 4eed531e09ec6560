//! `atrest ttlv decode|encode`: the debugging tool for captured KMIP traffic.

use std::io::{Read, Write};
use std::path::Path;

use anyhow::{bail, Context};
use kmip::ttlv::{self, xml, Limits};

use crate::cli::args::{Input, TtlvCommand};

pub fn run(cmd: TtlvCommand) -> anyhow::Result<()> {
    match cmd {
        TtlvCommand::Decode(args) => decode(&args.input, args.reveal_secrets),
        TtlvCommand::Encode(args) => encode(&args.input, args.binary),
    }
}

fn read_input(input: &Input) -> anyhow::Result<Vec<u8>> {
    let mut buf = Vec::new();
    match input.input.as_deref() {
        None => std::io::stdin()
            .read_to_end(&mut buf)
            .context("reading standard input")?,
        Some(p) if p == Path::new("-") => std::io::stdin()
            .read_to_end(&mut buf)
            .context("reading standard input")?,
        Some(p) => {
            buf = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
            buf.len()
        }
    };
    Ok(buf)
}

/// Hex text (whitespace, an optional `0x`, and `:` separators allowed) becomes bytes;
/// anything else is taken as binary TTLV.
fn ttlv_bytes(input: Vec<u8>) -> anyhow::Result<Vec<u8>> {
    let text = match std::str::from_utf8(&input) {
        Ok(t) if !t.trim().is_empty() => t,
        _ => return Ok(input),
    };
    let digits: String = text
        .trim()
        .trim_start_matches("0x")
        .chars()
        .filter(|c| !c.is_whitespace() && *c != ':')
        .collect();
    if !digits.chars().all(|c| c.is_ascii_hexdigit()) {
        return Ok(input);
    }
    hex::decode(&digits).context("the input looks like hex but has an odd number of digits")
}

fn decode(input: &Input, reveal: bool) -> anyhow::Result<()> {
    let bytes = ttlv_bytes(read_input(input)?)?;
    if bytes.is_empty() {
        bail!("no input: give a file of TTLV (binary or hex) or pipe one in");
    }
    let limits = Limits::default();
    let mut items = Vec::new();
    let mut offset = 0;
    let mut failure = None;
    while offset < bytes.len() {
        let rest = &bytes[offset..];
        let Some(header) = rest.get(..8) else {
            failure = Some(format!(
                "{} bytes left at byte {offset}, too few for a TTLV header",
                rest.len()
            ));
            break;
        };
        let header: [u8; 8] = header.try_into().unwrap_or_else(|_| unreachable!());
        let len = match ttlv::message_len(&header, &limits) {
            Ok(len) => len,
            Err(e) => {
                failure = Some(format!("message at byte {offset}: {e}"));
                break;
            }
        };
        let Some(message) = rest.get(..len) else {
            failure = Some(format!(
                "message at byte {offset} declares {len} bytes but only {} remain",
                rest.len()
            ));
            break;
        };
        match ttlv::decode_with(message, limits) {
            Ok(item) => items.push(item),
            Err(e) => {
                failure = Some(format!("message at byte {offset}: {e}"));
                break;
            }
        }
        offset += len;
    }
    let secrets = match reveal {
        true => xml::Secrets::Reveal,
        false => xml::Secrets::Redact,
    };
    let out = match items.len() {
        0 => String::new(),
        1 => xml::to_xml_with(&items[0], secrets),
        _ => xml::to_xml_document(&items, secrets),
    };
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(out.as_bytes())?;
    stdout.flush()?;
    match failure {
        Some(f) if items.is_empty() => bail!("not valid TTLV: {f}"),
        Some(f) => bail!("decoded {} message(s), then: {f}", items.len()),
        None => Ok(()),
    }
}

fn encode(input: &Input, binary: bool) -> anyhow::Result<()> {
    let bytes = read_input(input)?;
    let text = String::from_utf8(bytes).context("the XML input is not UTF-8")?;
    let items = xml::from_xml_document(&text, None).context("reading the XML form")?;
    if items.is_empty() {
        bail!("no KMIP items in the input");
    }
    let mut stdout = std::io::stdout().lock();
    for item in &items {
        let b = ttlv::encode(item);
        if binary {
            stdout.write_all(&b)?;
        } else {
            writeln!(stdout, "{}", hex::encode(&b))?;
        }
    }
    stdout.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_input_with_spaces_and_prefix_is_recognised() {
        assert_eq!(
            ttlv_bytes(b"0x42 00 78\n01".to_vec()).unwrap(),
            vec![0x42, 0, 0x78, 1]
        );
        assert_eq!(
            ttlv_bytes(b"42:00:78:01".to_vec()).unwrap(),
            vec![0x42, 0, 0x78, 1]
        );
        // Binary TTLV stays binary.
        let bin = vec![0x42, 0x00, 0x78, 0x01, 0, 0, 0, 0];
        assert_eq!(ttlv_bytes(bin.clone()).unwrap(), bin);
        assert!(ttlv_bytes(b"420".to_vec()).is_err());
    }
}
