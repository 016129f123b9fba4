//! Typed views over bytes. Nothing here does I/O; every parser takes untrusted bytes and returns
//! `None` (or an error) instead of panicking.

pub mod arp;
pub mod beacon;
#[doc(hidden)]
pub mod fuzzing;
pub mod link;
pub mod mac;
pub mod ndp;
pub mod neighbour;
pub mod vxlan;

pub use mac::MacAddr;
