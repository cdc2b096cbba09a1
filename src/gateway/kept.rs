//! What a journal's order entry sessions keep from the run that started it.

use std::io;
use std::path::Path;

use crate::config::GatewaySection;
use crate::journal::pinned::{self, Pinned};

/// The file in a journal directory that fixes its sessions' name (see [`SessionSettings`]).
pub const SESSION_SETTINGS_NAME: &str = "gateway.settings";

/// The SoupBinTCP session name the journal's streams were announced under (Login
/// Accepted). Every later run on the journal (a restart in the day) announces the same
/// name: a connector that saw the name change would take the stream for a new session and
/// ask it again from message 1 (or, naming the old one, be refused), so a renamed session
/// in the middle of a stream could have a member's fills read twice. On one node, a
/// configuration that differs is warned about and applies from the next journal (the next
/// trading day; without `[venue]`, a new journal directory); in a cluster it stops the
/// start, as the nodes' sessions must have one name.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionSettings {
    /// SoupBinTCP session name, as configured for the journal (with a trading day, the
    /// day's name).
    pub session: String,
}

impl SessionSettings {
    /// The configured settings.
    pub fn of(g: &GatewaySection) -> SessionSettings {
        SessionSettings {
            session: g.session.clone(),
        }
    }

    /// A name of 1 to 10 printable characters, as `gateway.session` must be.
    fn valid(&self) -> Result<(), String> {
        let s = &self.session;
        if (1..=10).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_graphic()) {
            Ok(())
        } else {
            Err(format!("session {s:?} is not 1 to 10 printable characters"))
        }
    }

    /// The settings written in journal directory `dir`, if any.
    pub fn read(dir: &Path) -> io::Result<Option<SessionSettings>> {
        pinned::read(dir, SESSION_SETTINGS_NAME, SessionSettings::valid)
    }

    /// The settings of the journal in `dir` ([`pinned::pin`]). In a `cluster`, a
    /// configuration that differs from what the journal kept is an error.
    pub fn pin(
        dir: &Path,
        g: &GatewaySection,
        journal_new: bool,
        cluster: bool,
    ) -> io::Result<(SessionSettings, Pinned)> {
        let configured = SessionSettings::of(g);
        let (settings, pinned) = pinned::pin(
            dir,
            SESSION_SETTINGS_NAME,
            &configured,
            journal_new,
            SessionSettings::valid,
        )?;
        if cluster && pinned == Pinned::KeptOverConfiguration {
            return Err(io::Error::other(format!(
                "[gateway] session {:?} differs from the one this node's journal's sessions were announced under ({:?}), and the nodes of a cluster must announce one: set it back (a new name needs a new cluster journal)",
                configured.session, settings.session
            )));
        }
        Ok((settings, pinned))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A journal with no record takes the configuration's name (written, over what a
    /// failed start left); one with records keeps its own, told whether the configuration
    /// differs, which a cluster refuses; one with records and no file (an older build's)
    /// takes the configuration's; a damaged file, or one naming an invalid session, is an
    /// error naming it.
    #[test]
    fn a_journals_session_name_is_the_one_it_started_with() {
        let dir = tempfile::tempdir().unwrap();
        let day = dir.path();
        let g = |session: &str| GatewaySection {
            session: session.into(),
            ..GatewaySection::default()
        };
        let (first, other) = (g("IR20261206"), g("XX20261206"));
        let of = SessionSettings::of;
        assert_eq!(SessionSettings::read(day).unwrap(), None);
        assert_eq!(
            SessionSettings::pin(day, &other, true, false).unwrap(),
            (of(&other), Pinned::New)
        );
        assert_eq!(
            SessionSettings::pin(day, &first, true, false).unwrap(),
            (of(&first), Pinned::New)
        );
        assert_eq!(
            SessionSettings::pin(day, &first, false, true).unwrap(),
            (of(&first), Pinned::Kept)
        );
        assert_eq!(
            SessionSettings::pin(day, &other, false, false).unwrap(),
            (of(&first), Pinned::KeptOverConfiguration)
        );
        let e = SessionSettings::pin(day, &other, false, true).unwrap_err();
        assert!(e.to_string().contains("must announce one"), "{e}");
        assert_eq!(SessionSettings::read(day).unwrap(), Some(of(&first)));
        std::fs::remove_file(day.join(SESSION_SETTINGS_NAME)).unwrap();
        assert_eq!(
            SessionSettings::pin(day, &other, false, false).unwrap(),
            (of(&other), Pinned::Assumed)
        );
        assert_eq!(SessionSettings::read(day).unwrap(), Some(of(&other)));
        for bad in [
            "session = 3",
            "session = \"ELEVEN CHARS\"",
            "session = \"\"",
        ] {
            std::fs::write(day.join(SESSION_SETTINGS_NAME), bad).unwrap();
            let e = SessionSettings::pin(day, &first, false, false).unwrap_err();
            assert!(e.to_string().contains(SESSION_SETTINGS_NAME), "{e}");
        }
    }
}
