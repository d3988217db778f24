//! One directory's entries, with a stable cookie per entry so that a
//! `readdir` can resume where it stopped without the handle holding a copy
//! of the listing: an entry added later gets a larger cookie, a removed one
//! shifts no other.

use crate::request::Ino;
use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};

/// The cookies of `.` and `..`; entries start after them.
pub const FIRST_COOKIE: u64 = 3;

/// A directory's entries.
#[derive(Debug)]
pub struct Dir {
    /// Name to (inode, cookie).
    by_name: BTreeMap<OsString, (Ino, u64)>,
    /// Cookie to name, in the order entries were made.
    by_cookie: BTreeMap<u64, OsString>,
    /// The next entry's cookie (never reused).
    next_cookie: u64,
}

impl Default for Dir {
    fn default() -> Self {
        Dir {
            by_name: BTreeMap::new(),
            by_cookie: BTreeMap::new(),
            next_cookie: FIRST_COOKIE,
        }
    }
}

impl Dir {
    /// The inode `name` names.
    pub fn get(&self, name: &OsStr) -> Option<Ino> {
        self.by_name.get(name).map(|&(ino, _)| ino)
    }

    /// Adds `name`; `false` (and no change) if it exists.
    pub fn insert(&mut self, name: &OsStr, ino: Ino) -> bool {
        if self.by_name.contains_key(name) {
            return false;
        }
        let cookie = self.next_cookie;
        self.next_cookie += 1;
        self.by_name.insert(name.to_owned(), (ino, cookie));
        self.by_cookie.insert(cookie, name.to_owned());
        true
    }

    /// Removes `name`; the inode it named.
    pub fn remove(&mut self, name: &OsStr) -> Option<Ino> {
        let (ino, cookie) = self.by_name.remove(name)?;
        self.by_cookie.remove(&cookie);
        Some(ino)
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// Whether it has no entries.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// The entries with a cookie greater than `after`, in cookie order.
    pub fn after(&self, after: u64) -> impl Iterator<Item = (u64, &OsStr, Ino)> {
        self.by_cookie
            .range(after.saturating_add(1)..)
            .map(|(&c, name)| (c, name.as_os_str(), self.by_name[name].0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_survive_removals_and_additions() {
        let mut d = Dir::default();
        for (i, n) in ["a", "b", "c"].iter().enumerate() {
            assert!(d.insert(OsStr::new(n), Ino(10 + i as u64)));
        }
        assert!(!d.insert(OsStr::new("a"), Ino(99)), "exists");
        let first: Vec<_> = d
            .after(0)
            .take(1)
            .map(|(c, n, _)| (c, n.to_owned()))
            .collect();
        assert_eq!(first, [(FIRST_COOKIE, OsString::from("a"))]);
        // A reader stopped after "a"; "a" is removed and "d" added meanwhile.
        d.remove(OsStr::new("a"));
        d.insert(OsStr::new("d"), Ino(13));
        let rest: Vec<_> = d
            .after(FIRST_COOKIE)
            .map(|(_, n, i)| (n.to_owned(), i))
            .collect();
        assert_eq!(
            rest,
            [
                (OsString::from("b"), Ino(11)),
                (OsString::from("c"), Ino(12)),
                (OsString::from("d"), Ino(13))
            ]
        );
        assert_eq!(d.len(), 3);
    }
}
