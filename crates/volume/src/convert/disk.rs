//! Reads, writes, syncs and wipes as the conversion steps issue them. An error names the
//! byte it happened at, and becomes [`ConvertError::Io`], whose message tells the operator
//! that the run stopped at its last committed step: every caller returns on the first
//! error without committing.

use zeroize::Zeroizing;

use super::ConvertError;
use crate::backend::BlockBackend;

pub(crate) fn io(offset: u64) -> impl FnOnce(std::io::Error) -> ConvertError {
    move |source| ConvertError::Io { offset, source }
}

pub(crate) fn read(
    dev: &dyn BlockBackend,
    len: u64,
    at: u64,
) -> Result<Zeroizing<Vec<u8>>, ConvertError> {
    let mut b = Zeroizing::new(vec![0u8; len as usize]);
    dev.read_at(&mut b, at).map_err(io(at))?;
    Ok(b)
}

pub(crate) fn write(dev: &dyn BlockBackend, b: &[u8], at: u64) -> Result<(), ConvertError> {
    dev.write_at(b, at).map_err(io(at))
}

pub(crate) fn sync(dev: &dyn BlockBackend) -> Result<(), ConvertError> {
    dev.sync().map_err(io(0))
}

pub(crate) fn zero(dev: &dyn BlockBackend, from: u64, to: u64) -> Result<(), ConvertError> {
    let block = vec![0u8; 1 << 20];
    let mut at = from;
    while at < to {
        let n = (to - at).min(block.len() as u64);
        write(dev, &block[..n as usize], at)?;
        at += n;
    }
    Ok(())
}
