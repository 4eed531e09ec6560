//! `atrest rekey`: the volume under a new KMIP key, by rewrapping (instant) or by
//! re-encrypting every sector (--deep); or the interrupted deep rekey is finished. Then the
//! old key is revoked unless --keep-old.

use service::ops::convert::{rekey, RekeyRequest};

use crate::cli::args::RekeyArgs;

pub fn run(a: RekeyArgs) -> anyhow::Result<()> {
    let c = &a.common;
    let req = RekeyRequest {
        location: super::convert::location(c),
        deep: a.deep,
        keep_old: a.old.keep_old,
        key_name: a.key_name.clone(),
        step: c.step,
    };
    let mut kms = super::convert::key_manager(&c.config)?;
    super::convert::run(c, |rep, stop| rekey(&mut kms, &req, rep, stop))
}
