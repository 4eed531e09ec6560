//! `atrest bind` and `atrest unbind`: a cryptsetup volume enrolled under a KMIP key, and
//! the enrolment removed. The passphrase that proves the operator may comes from the
//! terminal or a key file, never from the command line (where `ps` and shell history see
//! it), and lives in zeroized memory.

use std::io::Read;

use anyhow::Context;
use service::device::Location;
use zeroize::Zeroizing;

use crate::cli::args::{BindArgs, UnbindArgs};

/// The existing passphrase: a key file's bytes, standard input's, or typed on the terminal.
fn passphrase(key_file: Option<&std::path::Path>) -> anyhow::Result<Zeroizing<Vec<u8>>> {
    let bytes = match key_file {
        Some(p) if p.as_os_str() == "-" => {
            let mut b = Zeroizing::new(Vec::new());
            std::io::stdin()
                .take(8 << 20)
                .read_to_end(&mut b)
                .context("reading the passphrase from standard input")?;
            b
        }
        Some(p) => service::trusted::read("the key file", p, service::trusted::Role::Secret)?,
        None => {
            let typed = Zeroizing::new(
                rpassword::prompt_password("Passphrase of an existing keyslot: ")
                    .context("reading the passphrase from the terminal (or give --key-file)")?,
            );
            Zeroizing::new(typed.as_bytes().to_vec())
        }
    };
    anyhow::ensure!(!bytes.is_empty(), "the passphrase is empty");
    Ok(bytes)
}

pub fn bind(a: BindArgs) -> anyhow::Result<()> {
    let loc = Location {
        path: a.device.clone(),
        header: a.header.clone(),
    };
    let mut kms = super::convert::key_manager(&a.config)?;
    let pass = passphrase(a.key_file.as_deref())?;
    let r = service::ops::bind::bind(&mut kms, &loc, &pass, a.key_name.as_deref())?;
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        println!("{}: {}", a.device.display(), r.message);
    }
    Ok(())
}

pub fn unbind(a: UnbindArgs) -> anyhow::Result<()> {
    let loc = Location {
        path: a.device.clone(),
        header: a.header.clone(),
    };
    let mut kms = super::convert::key_manager(&a.config)?;
    let r = service::ops::bind::unbind(&mut kms, &loc, a.keep)?;
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        println!("{}: {}", a.device.display(), r.message);
    }
    Ok(())
}
