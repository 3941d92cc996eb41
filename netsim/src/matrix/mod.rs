//! The scenario matrix.
use crate::error::{NetsimError, Result};
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `netsim matrix`.
#[derive(Debug, clap::Args)]
pub struct MatrixArgs {
    /// Report folder.
    #[arg(long, default_value = "reports/netsim")]
    pub out: PathBuf,
}

pub fn run_cli(_args: &MatrixArgs) -> Result<ExitCode> {
    Err(NetsimError::Matrix("not yet".into()))
}
