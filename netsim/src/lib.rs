//! p2pnat-netsim: a small internet in Linux network namespaces, with NAT routers of every
//! RFC 4787 behaviour built from nftables, for testing p2pnat the way users meet it.
//!
//! ```no_run
//! use p2pnat_netsim::{Lab, NatKind, RouterConfig};
//! let lab = Lab::builder()
//!     .router("home", RouterConfig::new(NatKind::PortRestrictedCone))
//!     .host_behind("alice", "home")
//!     .public_host("bob")
//!     .build()?; // NetsimError::NotRoot without root: tests skip on it
//! let report = p2pnat_netsim::selfcheck::check_lab(&lab)?;
//! report.ensure_passed()?;
//! # Ok::<(), p2pnat_netsim::NetsimError>(())
//! ```
//!
//! Safety: every link is created inside the lab's own namespaces (named `nsim<run>-<host>`
//! with a random run id), none is connected to the machine's interfaces, and the lab is
//! removed when the [`Lab`] is dropped. `netsim down` removes leftovers of dead runs.

pub mod classify;
pub mod error;
pub mod flood;
pub mod lab;
pub mod matrix;
pub mod netcheck;
pub mod netns;
pub mod nft;
pub mod scenario;
pub mod selfcheck;
pub mod shaper;
pub mod signals;
pub mod stun;
pub mod topology;

pub use classify::{Classification, FilteringBehaviour, MappingBehaviour, NatBehaviour};
pub use error::{NetsimError, Result};
pub use lab::{Lab, LabBuilder, LabProcess};
pub use topology::{LinkImpairment, NatKind, RouterConfig};

/// For tests: builds a lab, or prints why it is skipping and returns `None` when not root.
/// Any other error is a real failure and panics with the error.
pub fn build_or_skip(builder: LabBuilder) -> Option<Lab> {
    match builder.build() {
        Ok(lab) => Some(lab),
        Err(NetsimError::NotRoot) => {
            print_skip("skipping: netsim needs root");
            None
        }
        Err(e) => panic!("building the lab failed: {e}"),
    }
}

/// Writes a line straight to the process's stderr, past the test harness's output capture,
/// so a skipped lab test says so in a plain `cargo test` run.
pub fn print_skip(message: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{message}");
}
