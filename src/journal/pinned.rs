//! Settings a journal keeps from the run that started it: small TOML files in the journal
//! directory (`feed.settings` for the market data feed, `gateway.settings` and `users.settings` for the order
//! entry sessions). Every later run on the journal (a restart in the day) uses what the
//! journal kept, so that what clients were told under one name is never continued under
//! another; the configuration's apply from the next journal.

use std::io;
use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Where a journal's settings came from ([`pin`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pinned {
    /// The configuration's, written for a journal with no record yet.
    New,
    /// Those the journal kept, the same as the configuration's.
    Kept,
    /// Those the journal kept; the configuration's differ (a warning on one node).
    KeptOverConfiguration,
    /// The configuration's, for a journal with records but no settings (written by a
    /// build before the file), written now.
    Assumed,
}

/// The settings kept in file `name` of journal directory `dir`, if any. A file that does
/// not parse, or whose settings `valid` refuses, is an error naming it.
pub fn read<T: DeserializeOwned>(
    dir: &Path,
    name: &str,
    valid: impl Fn(&T) -> Result<(), String>,
) -> io::Result<Option<T>> {
    let path = dir.join(name);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
    };
    let bad = |why: String| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{}: {why} (it fixes what the journal's clients were told; remove it to take the configuration's)",
                path.display()
            ),
        )
    };
    let settings: T = toml::from_str(&text).map_err(|e| bad(e.to_string()))?;
    valid(&settings).map_err(bad)?;
    Ok(Some(settings))
}

/// The settings of the journal in `dir` (file `name`). `journal_new`: the journal has no
/// record yet, so nothing was sent from it: the `configured` ones are written (over
/// whatever a start that failed before its first record left). Otherwise those the
/// journal kept; for a journal with records but no file, the configured ones, written now.
pub fn pin<T>(
    dir: &Path,
    name: &str,
    configured: &T,
    journal_new: bool,
    valid: impl Fn(&T) -> Result<(), String>,
) -> io::Result<(T, Pinned)>
where
    T: Clone + PartialEq + Serialize + DeserializeOwned,
{
    if !journal_new {
        match read(dir, name, valid)? {
            Some(kept) if kept == *configured => return Ok((kept, Pinned::Kept)),
            Some(kept) => return Ok((kept, Pinned::KeptOverConfiguration)),
            None => {}
        }
    }
    let text = toml::to_string(configured).map_err(io::Error::other)?;
    super::write_file_atomically(dir, name, text.as_bytes(), true)?;
    let pinned = if journal_new {
        Pinned::New
    } else {
        Pinned::Assumed
    };
    Ok((configured.clone(), pinned))
}
