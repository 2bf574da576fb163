//! The API token: from `--token-file` (a file, or a mounted Secret's key),
//! else `WEIR_TOKEN`, else generated at start. Whatever its origin, it is
//! written to `<state-dir>/api-token` (mode 0600) so that CLIs on this
//! machine find it; a generated token is also printed once to the log
//! with the UI's URL.

use std::{
    io::Write as _,
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
};

use anyhow::Context as _;

use crate::api::auth::Token;

/// The token's file name in the state directory.
pub const FILE_NAME: &str = "api-token";

/// Where the token came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// `--token-file`.
    File(PathBuf),
    /// `WEIR_TOKEN`.
    Env,
    /// Generated at start.
    Generated,
}

/// The agent's token, by the rules of the module docs. `env` is the value
/// of `WEIR_TOKEN`.
///
/// # Errors
/// An unreadable or invalid token file, an invalid `WEIR_TOKEN`, no random
/// source.
pub fn load(file: Option<&Path>, env: Option<&str>) -> anyhow::Result<(Token, Origin)> {
    if let Some(path) = file {
        return Ok((Token::from_file(path)?, Origin::File(path.to_owned())));
    }
    if let Some(text) = env {
        return Ok((Token::new(text, "WEIR_TOKEN")?, Origin::Env));
    }
    Ok((Token::generate()?, Origin::Generated))
}

/// Write the token to `<state_dir>/api-token`, readable by its owner only
/// (replaced whole: a reader never sees half a token). Nothing is written
/// when `--token-file` is that very file.
///
/// # Errors
/// When the file cannot be written.
pub fn save(state_dir: &Path, token: &Token, origin: &Origin) -> anyhow::Result<PathBuf> {
    let path = state_dir.join(FILE_NAME);
    if let Origin::File(from) = origin
        && std::fs::canonicalize(from).ok() == std::fs::canonicalize(&path).ok()
    {
        return Ok(path);
    }
    std::fs::create_dir_all(state_dir)
        .with_context(|| format!("cannot create {}", state_dir.display()))?;
    let temp = state_dir.join(format!(".{FILE_NAME}.{}", std::process::id()));
    let _ = std::fs::remove_file(&temp);
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temp)
        .and_then(|mut f| {
            f.write_all(token.expose().as_bytes())?;
            f.write_all(b"\n")?;
            f.sync_all()
        })
        .and_then(|()| std::fs::rename(&temp, &path));
    if let Err(error) = written {
        let _ = std::fs::remove_file(&temp);
        return Err(error).with_context(|| format!("cannot write {}", path.display()));
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn a_file_wins_over_the_environment_which_wins_over_generation() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secret");
        std::fs::write(&file, "from-file\n").unwrap();
        let (token, origin) = load(Some(&file), Some("from-env")).unwrap();
        assert_eq!((token.expose(), origin), ("from-file", Origin::File(file)));
        let (token, origin) = load(None, Some("from-env")).unwrap();
        assert_eq!((token.expose(), origin), ("from-env", Origin::Env));
        let (token, origin) = load(None, None).unwrap();
        assert_eq!((token.expose().len(), origin), (64, Origin::Generated));
        let error = load(Some(&dir.path().join("missing")), None).unwrap_err();
        assert!(format!("{error:#}").contains("missing"), "{error:#}");
        assert!(load(None, Some(" ")).is_err());
    }

    #[test]
    fn the_saved_token_is_private_and_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let (first, origin) = load(None, None).unwrap();
        let path = save(&state, &first, &origin).unwrap();
        assert_eq!(path, state.join(FILE_NAME));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(Token::from_file(&path).unwrap(), first);
        let (second, origin) = load(None, Some("again")).unwrap();
        save(&state, &second, &origin).unwrap();
        assert_eq!(Token::from_file(&path).unwrap(), second);
        assert_eq!(
            std::fs::read_dir(&state).unwrap().count(),
            1,
            "no temp file left"
        );
        // A --token-file that is the state file is left alone.
        let (third, origin) = load(Some(&path), None).unwrap();
        save(&state, &third, &origin).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "again\n");
    }
}
