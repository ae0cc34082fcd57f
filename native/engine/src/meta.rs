//! Ownership and access rules of a table.
//!
//! Processes are opaque 64-bit words (the host's pid words); the engine only
//! compares them.

use parking_lot::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};

/// Who may read and write a table besides its owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Everyone reads and writes.
    Public,
    /// Everyone reads; only the owner writes.
    Protected,
    /// Only the owner reads and writes.
    Private,
}

impl Access {
    fn from_u8(v: u8) -> Access {
        match v {
            0 => Access::Public,
            1 => Access::Protected,
            _ => Access::Private,
        }
    }
}

/// The process that inherits a table when its owner exits, and the data it
/// is handed (encoded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heir {
    /// The heir's pid word.
    pub pid: u64,
    /// Encoded term sent along with the table.
    pub data: Vec<u8>,
}

/// What happens to a table when its owner exits.
#[derive(Debug, PartialEq, Eq)]
pub enum OwnerExit {
    /// The exited process was not the owner: nothing to do.
    NotOwner,
    /// Ownership passed to this heir; tell it.
    Inherited(Heir),
    /// The table must be deleted.
    Delete,
}

/// Ownership, access and lifecycle state of one table.
#[derive(Debug)]
pub struct Meta {
    owner: AtomicU64,
    /// An [`Access`] (`setopts/2` may change it).
    access: AtomicU8,
    keypos: usize,
    heir: Mutex<Option<Heir>>,
    /// Set when the current heir has exited (it then inherits nothing).
    heir_dead: AtomicBool,
    deleted: AtomicBool,
}

impl Meta {
    /// A live table owned by `owner`.
    pub fn new(owner: u64, access: Access, keypos: usize, heir: Option<Heir>) -> Self {
        Meta {
            owner: AtomicU64::new(owner),
            access: AtomicU8::new(access as u8),
            keypos,
            heir: Mutex::new(heir),
            heir_dead: AtomicBool::new(false),
            deleted: AtomicBool::new(false),
        }
    }

    /// The owner's pid word.
    #[inline]
    pub fn owner(&self) -> u64 {
        self.owner.load(Ordering::Acquire)
    }

    /// Makes `pid` the owner.
    pub fn set_owner(&self, pid: u64) {
        self.owner.store(pid, Ordering::Release);
    }

    /// The access mode.
    #[inline]
    pub fn access(&self) -> Access {
        Access::from_u8(self.access.load(Ordering::Acquire))
    }

    /// Changes the access mode.
    pub fn set_access(&self, access: Access) {
        self.access.store(access as u8, Ordering::Release);
    }

    /// The key position (1-based).
    #[inline]
    pub fn keypos(&self) -> usize {
        self.keypos
    }

    /// May `caller` read?
    #[inline]
    pub fn can_read(&self, caller: u64) -> bool {
        !self.is_deleted() && (self.access() != Access::Private || caller == self.owner())
    }

    /// May `caller` write?
    #[inline]
    pub fn can_write(&self, caller: u64) -> bool {
        !self.is_deleted() && (self.access() == Access::Public || caller == self.owner())
    }

    /// May the caller read? `caller` (the caller's pid word) is asked for
    /// only when the answer depends on it (private tables), so that public
    /// and protected tables skip the cost of finding the caller.
    #[inline]
    pub fn can_read_by(&self, caller: impl FnOnce() -> u64) -> bool {
        !self.is_deleted() && (self.access() != Access::Private || caller() == self.owner())
    }

    /// May the caller write? Like [`Meta::can_read_by`]: `caller` is asked
    /// for only for protected and private tables.
    #[inline]
    pub fn can_write_by(&self, caller: impl FnOnce() -> u64) -> bool {
        !self.is_deleted() && (self.access() == Access::Public || caller() == self.owner())
    }

    /// The current heir.
    pub fn heir(&self) -> Option<Heir> {
        self.heir.lock().clone()
    }

    /// Sets or clears the heir.
    pub fn set_heir(&self, heir: Option<Heir>) {
        let mut h = self.heir.lock();
        *h = heir;
        self.heir_dead.store(false, Ordering::Release);
    }

    /// Marks the table deleted; true only for the first caller.
    pub fn mark_deleted(&self) -> bool {
        !self.deleted.swap(true, Ordering::AcqRel)
    }

    /// True once the table is deleted.
    #[inline]
    pub fn is_deleted(&self) -> bool {
        self.deleted.load(Ordering::Acquire)
    }

    /// Records that `pid` exited if it is the heir: it then inherits nothing
    /// (it stays reported as the heir, as in ETS).
    pub fn heir_exited(&self, pid: u64) {
        let heir = self.heir.lock();
        if heir.as_ref().is_some_and(|h| h.pid == pid) {
            self.heir_dead.store(true, Ordering::Release);
        }
    }

    /// Decides what `pid`'s exit means for the table. When the owner exits
    /// and an heir other than itself is set, the heir becomes the owner (and
    /// stays reported as the heir, as in ETS).
    pub fn owner_exited(&self, pid: u64) -> OwnerExit {
        if self.is_deleted() || self.owner() != pid {
            return OwnerExit::NotOwner;
        }
        let heir = self.heir.lock();
        match heir.as_ref() {
            Some(h) if h.pid != pid && !self.heir_dead.load(Ordering::Acquire) => {
                // The heir stays set (now the owner itself, as ETS reports
                // it): when it exits in turn, the table is deleted.
                self.set_owner(h.pid);
                OwnerExit::Inherited(h.clone())
            }
            _ => OwnerExit::Delete,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_rules() {
        let m = Meta::new(1, Access::Protected, 1, None);
        assert!(m.can_read(2) && !m.can_write(2) && m.can_write(1));
        let m = Meta::new(1, Access::Private, 1, None);
        assert!(!m.can_read(2) && m.can_read(1));
        let m = Meta::new(1, Access::Public, 1, None);
        assert!(m.can_write(2));
        assert!(m.mark_deleted());
        assert!(!m.mark_deleted());
        assert!(!m.can_read(1) && !m.can_write(1));
    }

    #[test]
    fn lazy_caller_is_asked_only_when_needed() {
        let never = || -> u64 { panic!("caller not needed") };
        let m = Meta::new(1, Access::Public, 1, None);
        assert!(m.can_read_by(never) && m.can_write_by(never));
        let m = Meta::new(1, Access::Protected, 1, None);
        assert!(m.can_read_by(never) && !m.can_write_by(|| 2) && m.can_write_by(|| 1));
        let m = Meta::new(1, Access::Private, 1, None);
        assert!(!m.can_read_by(|| 2) && m.can_read_by(|| 1));
    }

    #[test]
    fn a_dead_heir_inherits_nothing() {
        let m = Meta::new(
            1,
            Access::Protected,
            1,
            Some(Heir {
                pid: 2,
                data: vec![],
            }),
        );
        m.heir_exited(3);
        m.heir_exited(2);
        assert_eq!(m.heir().map(|h| h.pid), Some(2));
        assert_eq!(m.owner_exited(1), OwnerExit::Delete);
        let m = Meta::new(
            1,
            Access::Protected,
            1,
            Some(Heir {
                pid: 2,
                data: vec![],
            }),
        );
        m.heir_exited(2);
        m.set_heir(Some(Heir {
            pid: 4,
            data: vec![],
        }));
        assert!(matches!(m.owner_exited(1), OwnerExit::Inherited(_)));
    }

    #[test]
    fn owner_exit_passes_to_heir_once() {
        let heir = Heir {
            pid: 2,
            data: vec![1],
        };
        let m = Meta::new(1, Access::Protected, 1, Some(heir.clone()));
        assert_eq!(m.owner_exited(3), OwnerExit::NotOwner);
        assert_eq!(m.owner_exited(1), OwnerExit::Inherited(heir));
        assert_eq!(m.owner(), 2);
        // Still reported as heir (ETS does so); its own exit deletes.
        assert_eq!(m.heir().map(|h| h.pid), Some(2));
        assert_eq!(m.owner_exited(2), OwnerExit::Delete);
    }
}
