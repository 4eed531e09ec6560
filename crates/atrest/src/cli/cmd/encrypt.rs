//! `atrest encrypt`: existing data becomes a volume, in place; or the interrupted
//! encryption of this device is finished.

use service::ops::convert::{encrypt, EncryptRequest};

use crate::cli::args::EncryptArgs;

pub fn run(a: EncryptArgs) -> anyhow::Result<()> {
    let c = &a.common;
    let req = EncryptRequest {
        location: super::convert::location(c),
        key: a.key.spec(),
        reduce_device_size: a.reduce_device_size,
        step: c.step,
    };
    let mut kms = super::convert::key_manager(&c.config)?;
    super::convert::run(c, |rep, stop| encrypt(&mut kms, &req, rep, stop))
}
