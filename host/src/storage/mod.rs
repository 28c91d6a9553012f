//! Storage inside this machine: the block device under a mounted filesystem, and growing that
//! filesystem online once the volume under it grew (the host's part of scaling storage: it
//! needs root and the machine's devices, so no plugin does it).
//!
//! Owns: reading `/proc/self/mountinfo` and `/sys/dev/block`, running the filesystems' own grow
//! tools (`xfs_growfs`, `btrfs filesystem resize`, `resize2fs`, `growpart`).

pub mod block;
pub mod grow;
pub mod mountinfo;
