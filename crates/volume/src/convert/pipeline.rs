//! The two-thread pipeline every conversion loop runs its chunks through: a reader thread
//! reads, verifies and transforms the next chunk while the calling thread writes, syncs
//! and commits the one before. The pipeline decides nothing about order or durability:
//! the chunks come in the order the loop's invariant needs, and the loop's `write`
//! callback does each step's writes, syncs and commit.

use super::disk::io;
use super::{park, ConvertError};
use crate::backend::BlockBackend;

/// One chunk the reader thread prepares: read `len` bytes at `at`, check them against
/// `sha256` if given (the park), transform them as the data at `logical`.
pub(super) struct Chunk {
    pub(super) at: u64,
    pub(super) len: u64,
    pub(super) logical: u64,
    pub(super) sha256: Option<String>,
}

/// What the reader hands over: the chunk's index, the summary of the bytes as read (when
/// the writer needs one: the journal's checksums), and the transformed bytes.
type Ready = (usize, Option<Vec<u8>>, Vec<u8>);

/// What the reader computes from a chunk's bytes as read, before transforming them.
pub(super) type Summarise<'a> = dyn Fn(&[u8]) -> Vec<u8> + Sync + 'a;

/// The writer's side: the chunk, the summary of its bytes as read (if asked for) and the
/// bytes as transformed; false stops the pipeline.
pub(super) type WriteChunk<'a> =
    dyn FnMut(&Chunk, Option<&[u8]>, &[u8]) -> Result<bool, ConvertError> + 'a;

/// Runs `chunks` through a reader thread (read, verify, summarise if `summarise` is given,
/// transform: the XTS work spreads over all cores) while this thread writes, syncs and commits the one before, so the
/// disk reads the next chunk while it writes this one. Reading ahead is safe because a
/// chunk's source is never an earlier chunk's destination (invariant 2). `write` returns
/// false to stop early. Buffers are recycled, and none needs zeroizing: they hold
/// ciphertext, or plaintext that is on the same disk in the clear anyway.
pub(super) fn pipeline(
    dev: &dyn BlockBackend,
    chunks: &[Chunk],
    summarise: Option<&Summarise<'_>>,
    transform: &(dyn Fn(&mut [u8], u64) + Sync),
    write: &mut WriteChunk<'_>,
) -> Result<(), ConvertError> {
    use std::sync::mpsc::{channel, sync_channel};
    std::thread::scope(|scope| {
        let (ready_tx, ready_rx) = sync_channel::<Result<Ready, ConvertError>>(1);
        let (spare_tx, spare_rx) = channel::<Vec<u8>>();
        scope.spawn(move || {
            for (i, c) in chunks.iter().enumerate() {
                let mut buf = spare_rx.try_recv().unwrap_or_default();
                buf.resize(c.len as usize, 0);
                let r = dev
                    .read_at(&mut buf, c.at)
                    .map_err(io(c.at))
                    .and_then(|()| match &c.sha256 {
                        Some(want) if park::sha256_hex(&buf) != *want => {
                            Err(ConvertError::ParkDamaged {
                                offset: c.at,
                                len: c.len,
                            })
                        }
                        _ => Ok(()),
                    });
                let msg = r.map(|()| {
                    let summary = summarise.map(|f| f(&buf));
                    transform(&mut buf, c.logical);
                    (i, summary, buf)
                });
                let failed = msg.is_err();
                if ready_tx.send(msg).is_err() || failed {
                    return;
                }
            }
        });
        for msg in ready_rx {
            let (i, summary, out) = msg?;
            let go_on = write(&chunks[i], summary.as_deref(), &out)?;
            let _ = spare_tx.send(out);
            if !go_on {
                break;
            }
        }
        Ok(())
    })
}

/// The chunks of `[from, size)` in steps of `step`, each read where it lies on the data
/// device (`off` + its logical position).
pub(super) fn forward_chunks(from: u64, size: u64, step: u64, off: u64) -> Vec<Chunk> {
    let mut chunks = Vec::new();
    let mut at = from;
    while at < size {
        let c = step.min(size - at);
        chunks.push(Chunk {
            at: off + at,
            len: c,
            logical: at,
            sha256: None,
        });
        at += c;
    }
    chunks
}
