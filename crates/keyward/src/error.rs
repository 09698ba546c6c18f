//! How a command fails, and the exit status that follows (contract: 1 refused or failed,
//! 2 bad usage).

use std::io::Write;
use std::process::ExitCode;

/// A failed command.
#[derive(Debug)]
pub enum CliError {
    /// Bad usage: a flag value, a setting or the config file is wrong. Exit 2.
    Usage(String),
    /// The API refused or could not be reached. Exit 1.
    Api {
        error: Box<keyward_client::Error>,
        /// The server's base URL, for "cannot reach" messages.
        url: String,
    },
    /// Anything else that failed. Exit 1.
    Failed(anyhow::Error),
    /// Failed, and the command already said why (e.g. `key verify` of an invalid key).
    /// Exit 1.
    Reported,
}

impl From<anyhow::Error> for CliError {
    fn from(e: anyhow::Error) -> Self {
        CliError::Failed(e)
    }
}

impl CliError {
    pub fn exit_code(&self) -> ExitCode {
        match self {
            CliError::Usage(_) => ExitCode::from(2),
            _ => ExitCode::from(1),
        }
    }

    /// Writes the message to stderr. Never includes a credential or a key: API errors
    /// show the problem's title, status, detail and field; transport errors their cause.
    pub fn report(&self) {
        let mut err = std::io::stderr().lock();
        let _ = match self {
            CliError::Usage(msg) => writeln!(err, "error: {msg}"),
            CliError::Api { error, url } => write_api_error(&mut err, error, url),
            CliError::Failed(e) => writeln!(err, "error: {e:#}"),
            CliError::Reported => Ok(()),
        };
    }
}

fn write_api_error(
    w: &mut impl Write,
    error: &keyward_client::Error,
    url: &str,
) -> std::io::Result<()> {
    use keyward_client::Error as E;
    match error {
        E::Api { status, problem } => {
            write!(w, "error: {} ({status})", problem.title)?;
            if !problem.detail.is_empty() {
                write!(w, ": {}", problem.detail)?;
            }
            writeln!(w)?;
            if let Some(field) = &problem.field {
                writeln!(w, "  field: {field}")?;
            }
            if *status == 401 {
                writeln!(w, "  hint: give a key with --token or KEYWARD_TOKEN")?;
            }
            Ok(())
        }
        E::Transport(e) => {
            write!(w, "error: cannot reach the server at {url}")?;
            let mut source: Option<&dyn std::error::Error> = Some(e);
            while let Some(s) = source {
                write!(w, ": {s}")?;
                source = s.source();
            }
            writeln!(w)
        }
        other => writeln!(w, "error: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyward_proto::Problem;

    #[test]
    fn exit_codes() {
        assert_eq!(CliError::Usage("x".into()).exit_code(), ExitCode::from(2));
        assert_eq!(CliError::Reported.exit_code(), ExitCode::from(1));
        assert_eq!(
            CliError::Failed(anyhow::anyhow!("x")).exit_code(),
            ExitCode::from(1)
        );
    }

    #[test]
    fn api_errors_show_title_detail_and_field() {
        let error = keyward_client::Error::Api {
            status: 400,
            problem: Problem {
                type_: "about:blank".into(),
                title: "Invalid field".into(),
                status: 400,
                detail: "scopes: empty scope".into(),
                field: Some("scopes".into()),
            },
        };
        let mut out = Vec::new();
        write_api_error(&mut out, &error, "http://x").unwrap();
        let out = String::from_utf8(out).unwrap();
        assert_eq!(
            out,
            "error: Invalid field (400): scopes: empty scope\n  field: scopes\n"
        );
    }
}
