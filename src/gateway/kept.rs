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

/// The file in a journal directory that names its owners (see [`UserNames`]).
pub const USERS_SETTINGS_NAME: &str = "users.settings";

/// The usernames of the journal's owners, in owner order. The journal knows an owner by
/// its place in `[[users]]` (the book configuration's fingerprint holds each owner's firm
/// and settings, not its name), and so does a login: a list reordered or renamed between
/// two runs on one journal would give one member's stream, live orders and references to
/// another that logs in under the name now in that place. A start whose names differ from
/// the journal's is refused; a journal with records and no file (an older build's) takes
/// the configuration's.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserNames {
    /// `users[].username`, in the configuration's order.
    pub users: Vec<String>,
}

impl UserNames {
    /// The configured names, in order.
    pub fn of(users: &[crate::config::UserConfig]) -> UserNames {
        UserNames {
            users: users.iter().map(|u| u.username.clone()).collect(),
        }
    }

    /// Names of 1 to 6 ASCII letters or digits, as `users[].username` must be.
    fn valid(&self) -> Result<(), String> {
        match self
            .users
            .iter()
            .find(|u| !(1..=6).contains(&u.len()) || !u.bytes().all(|b| b.is_ascii_alphanumeric()))
        {
            None => Ok(()),
            Some(u) => Err(format!(
                "username {u:?} is not 1 to 6 ASCII letters or digits"
            )),
        }
    }

    /// The names written in journal directory `dir`, if any.
    pub fn read(dir: &Path) -> io::Result<Option<UserNames>> {
        pinned::read(dir, USERS_SETTINGS_NAME, UserNames::valid)
    }

    /// Checks the `configured` names against the names of the journal in `dir`, writing
    /// them for a journal with no record (`journal_new`) or none kept: an error names the
    /// first owner whose name differs.
    pub fn pin(dir: &Path, configured: &UserNames, journal_new: bool) -> io::Result<Pinned> {
        let (kept, pinned) = pinned::pin(
            dir,
            USERS_SETTINGS_NAME,
            configured,
            journal_new,
            UserNames::valid,
        )?;
        if pinned != Pinned::KeptOverConfiguration {
            return Ok(pinned);
        }
        let at = (0..configured.users.len().max(kept.users.len()))
            .find(|&i| configured.users.get(i) != kept.users.get(i))
            .expect("the lists differ");
        let name = |list: &UserNames| {
            list.users
                .get(at)
                .map_or_else(|| "none".to_string(), |u| format!("{u:?}"))
        };
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "users[{at}] is {} but this journal's owner {at} is {} (journal {}): an owner is known by its place in [[users]], so a list reordered or renamed would give one member's stream and live orders to another; put the list back as it was ({}) and change it from the next journal",
                name(configured),
                name(&kept),
                dir.join(USERS_SETTINGS_NAME).display(),
                kept.users.join(", ")
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A journal with no record takes the configuration's names; one with records refuses
    /// a list whose names moved or changed, naming the first place they differ; one with
    /// records and no file (an older build's) takes the configuration's; a damaged file is
    /// an error naming it.
    #[test]
    fn a_journals_owners_keep_their_names() {
        let dir = tempfile::tempdir().unwrap();
        let day = dir.path();
        let users = |names: &[&str]| UserNames {
            users: names.iter().map(|n| n.to_string()).collect(),
        };
        let first = users(&["AA1", "AA2"]);
        assert_eq!(UserNames::pin(day, &first, true).unwrap(), Pinned::New);
        assert_eq!(UserNames::pin(day, &first, false).unwrap(), Pinned::Kept);
        let e = UserNames::pin(day, &users(&["AA2", "AA1"]), false).unwrap_err();
        assert!(
            e.to_string()
                .contains("users[0] is \"AA2\" but this journal's owner 0 is \"AA1\""),
            "{e}"
        );
        let e = UserNames::pin(day, &users(&["AA1", "BB2"]), false).unwrap_err();
        assert!(e.to_string().contains("users[1] is \"BB2\""), "{e}");
        assert_eq!(UserNames::read(day).unwrap(), Some(first.clone()));
        // A journal with no record yet: the configuration's, whatever was there.
        let swapped = users(&["AA2", "AA1"]);
        assert_eq!(UserNames::pin(day, &swapped, true).unwrap(), Pinned::New);
        assert_eq!(UserNames::read(day).unwrap(), Some(swapped.clone()));
        std::fs::remove_file(day.join(USERS_SETTINGS_NAME)).unwrap();
        assert_eq!(UserNames::pin(day, &first, false).unwrap(), Pinned::Assumed);
        assert_eq!(UserNames::read(day).unwrap(), Some(first.clone()));
        for bad in ["users = 3", "users = [\"TOOLONGNAME\"]", "names = []"] {
            std::fs::write(day.join(USERS_SETTINGS_NAME), bad).unwrap();
            let e = UserNames::pin(day, &first, false).unwrap_err();
            assert!(e.to_string().contains(USERS_SETTINGS_NAME), "{e}");
        }
    }

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
