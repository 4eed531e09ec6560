//! `atrest decrypt`: a volume back to plaintext, in place; or the interrupted decryption
//! of this device is finished. Then the volume's key is revoked unless --keep-old.

use service::ops::convert::{decrypt, DecryptRequest};

use crate::cli::args::DecryptArgs;

pub fn run(a: DecryptArgs) -> anyhow::Result<()> {
    let c = &a.common;
    let req = DecryptRequest {
        location: super::convert::location(c),
        keep_old: a.old.keep_old,
        step: c.step,
    };
    let mut kms = super::convert::key_manager(&c.config)?;
    super::convert::run(c, |rep, stop| decrypt(&mut kms, &req, rep, stop))
}
