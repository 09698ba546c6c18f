//! Keyward's leak scanner: finds Keyward keys (by format and checksum) and well-known
//! credentials in files, folders, standard input, git history and the git index.
//!
//! No HTTP here: reporting leaked keys to a server is the binary's job.

pub mod engine;
pub mod finding;
pub mod format;
pub mod generic;
pub mod keyward;
pub mod rules;
pub mod scan;
pub mod template;

pub use engine::{Detector, Hit};
pub use finding::{Finding, LeakedKey};
pub use scan::{Options, Progress, Report, ScanError, Scanner, SkipReason, Skipped};
