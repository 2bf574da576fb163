//! The one place the lab runs external programs (`ip`, `nft`). Every error
//! carries the command line and what the program said on stderr, because
//! "exit status 2" alone never tells what went wrong.

use std::{
    io::Write,
    process::{Command, Stdio},
};

/// A command that could not run or failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CmdError {
    /// The program could not be started.
    #[error("cannot run `{command}`")]
    Spawn {
        /// The command line.
        command: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The program exited unsuccessfully.
    #[error("`{command}` failed ({status}): {stderr}")]
    Failed {
        /// The command line.
        command: String,
        /// Exit status as printed by std.
        status: String,
        /// Its stderr, trimmed.
        stderr: String,
    },
}

impl CmdError {
    /// Whether the program's complaint says the object is not there, which
    /// teardown treats as success (idempotent `down`).
    #[must_use]
    pub fn is_not_found(&self) -> bool {
        match self {
            Self::Failed { stderr, .. } => {
                let s = stderr.to_ascii_lowercase();
                s.contains("cannot find device")
                    || s.contains("no such file")
                    || s.contains("does not exist")
                    || s.contains("no such process")
                    || s.contains("not found")
            }
            Self::Spawn { .. } => false,
        }
    }
}

fn render(program: &str, args: &[&str]) -> String {
    std::iter::once(program)
        .chain(args.iter().copied())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Run `program args...`, returning its stdout.
///
/// # Errors
/// [`CmdError`] naming the command and its stderr.
pub fn run(program: &str, args: &[&str]) -> Result<String, CmdError> {
    run_with_stdin(program, args, None)
}

/// Run `program args...` with `stdin` fed to it, returning its stdout.
///
/// # Errors
/// [`CmdError`] naming the command and its stderr.
pub fn run_with_stdin(
    program: &str,
    args: &[&str],
    stdin: Option<&str>,
) -> Result<String, CmdError> {
    let command = render(program, args);
    let spawn_error = |source| CmdError::Spawn {
        command: command.clone(),
        source,
    };
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn_error)?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes()).map_err(spawn_error)?;
    }
    let output = child.wait_with_output().map_err(spawn_error)?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(CmdError::Failed {
            command,
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}

/// Like [`run`], but "no such object" counts as success.
///
/// # Errors
/// Any other failure.
pub fn run_absent_ok(program: &str, args: &[&str]) -> Result<(), CmdError> {
    match run(program, args) {
        Ok(_) => Ok(()),
        Err(e) if e.is_not_found() => Ok(()),
        Err(e) => Err(e),
    }
}
