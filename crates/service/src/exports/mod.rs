//! The roads to an unlocked volume's plaintext: NBD (any NBD client, anywhere), FUSE (the
//! volume as one file, for loop devices where neither the nbd module nor device-mapper
//! exists), and dm-crypt through stock `cryptsetup` (the kernel's own mapping, at full
//! speed, where device-mapper exists). Each can be closed, after which I/O fails instead
//! of silently serving.

pub mod dm;
pub mod fuse;
pub mod nbd;
