//! Sphinx key rotation, as Nym schedules it.
//!
//! Time is cut into epochs of `epoch_length` seconds since `genesis`; a key is valid for
//! `validity_epochs` epochs, so the rotation id of epoch `e` is `e / validity_epochs`. Around each
//! boundary two keys are live, and the frame's parity byte says which one a packet is for:
//!
//! * the last epoch of rotation `r`: `r` is primary and `r + 1` is pre-announced (secondary), so
//!   clients that already switched are served;
//! * the first epoch of rotation `r + 1`: `r + 1` is primary and `r` is kept (secondary), so
//!   packets built before the switch are served;
//! * every other epoch: only the current key.
//!
//! [`desired`] says which keys should be live in an epoch; [`plan`] says how to get there from
//! the keys on disk. The binary carries the plan out (writes and renames key files, makes a
//! replay filter per new key, publishes the new snapshot to the workers).
//!
//! The schedule comes from the config (`[rotation] source = "local"`) or from nym-api
//! (`"nym-api"`: [`nym_api`]).

pub mod nym_api;

/// The schedule's parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    /// Unix time (seconds) at which epoch 0 starts.
    pub genesis: u64,
    /// Epoch length in seconds (Nym: 3600).
    pub epoch_length: u64,
    /// Epochs a key is valid for (Nym: 24); at least 3 so the overlaps do not touch.
    pub validity_epochs: u64,
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule {
            genesis: 0,
            epoch_length: 3600,
            validity_epochs: 24,
        }
    }
}

/// Which keys should be live: the primary's rotation id, and the secondary's if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Live {
    /// Rotation id of the primary key.
    pub primary: u32,
    /// Rotation id of the secondary key (previous or next).
    pub secondary: Option<u32>,
}

impl Schedule {
    /// The epoch at unix time `now` (seconds).
    pub fn epoch_at(&self, now: u64) -> u64 {
        now.saturating_sub(self.genesis) / self.epoch_length.max(1)
    }

    /// The rotation id of an epoch.
    pub fn rotation_of(&self, epoch: u64) -> u32 {
        (epoch / self.validity_epochs.max(1)) as u32
    }

    /// Unix time at which `epoch` starts.
    pub fn epoch_start(&self, epoch: u64) -> u64 {
        self.genesis + epoch * self.epoch_length
    }
}

/// The keys that should be live in `epoch`.
pub fn desired(s: &Schedule, epoch: u64) -> Live {
    let v = s.validity_epochs.max(1);
    let r = s.rotation_of(epoch);
    let pos = epoch % v;
    let secondary = if pos == v - 1 {
        Some(r + 1) // pre-announce the next key
    } else if pos == 0 && r > 0 {
        Some(r - 1) // keep the previous key one more epoch
    } else {
        None
    };
    Live {
        primary: r,
        secondary,
    }
}

/// One step towards the desired keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Nothing to do.
    Nothing,
    /// Generate the key for this rotation and install it as the secondary (pre-announce).
    PreAnnounce(u32),
    /// The secondary (pre-announced) key becomes primary; the old primary becomes secondary.
    Swap,
    /// Drop the secondary key.
    Purge,
    /// The keys on disk are not a neighbour of the desired ones (the node was down across a
    /// rotation): install fresh keys for these rotations.
    Reset(Live),
}

/// The next step from the keys on disk (`current`) to `want`. A node whose primary is the
/// one wanted keeps it: when the schedule also wants the previous rotation's key (the epoch
/// after a swap) and the node does not have it (say it was made in that epoch), nothing is
/// done, or a stray secondary is purged; a fresh key under the old rotation's id would serve
/// no packet, and a fresh primary would throw away the key the network knows.
pub fn plan(current: Live, want: Live) -> Step {
    if current == want {
        return Step::Nothing;
    }
    match (current, want) {
        (
            Live {
                primary: c,
                secondary: have,
            },
            Live {
                primary: w,
                secondary: Some(old),
            },
        ) if c == w && old.checked_add(1) == Some(w) => match have {
            None => Step::Nothing,
            Some(_) => Step::Purge,
        },
        (
            Live {
                primary: c,
                secondary: None,
            },
            Live {
                primary: w,
                secondary: Some(n),
            },
        ) if c == w && n == w + 1 => Step::PreAnnounce(n),
        (
            Live {
                primary: c,
                secondary: Some(n),
            },
            Live { primary: w, .. },
        ) if n == c + 1 && w == n => Step::Swap,
        (
            Live {
                primary: c,
                secondary: Some(_),
            },
            Live {
                primary: w,
                secondary: None,
            },
        ) if c == w => Step::Purge,
        _ => Step::Reset(want),
    }
}

/// Applies `step` to `current`, as the binary will on disk (for tests and dry runs).
pub fn apply(current: Live, step: Step) -> Live {
    match step {
        Step::Nothing => current,
        Step::PreAnnounce(n) => Live {
            primary: current.primary,
            secondary: Some(n),
        },
        Step::Swap => Live {
            primary: current.secondary.unwrap_or(current.primary),
            secondary: Some(current.primary),
        },
        Step::Purge => Live {
            primary: current.primary,
            secondary: None,
        },
        Step::Reset(l) => l,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nym_schedule_around_a_boundary() {
        let s = Schedule::default();
        assert_eq!(
            desired(&s, 0),
            Live {
                primary: 0,
                secondary: None
            }
        );
        assert_eq!(
            desired(&s, 22),
            Live {
                primary: 0,
                secondary: None
            }
        );
        assert_eq!(
            desired(&s, 23),
            Live {
                primary: 0,
                secondary: Some(1)
            }
        );
        assert_eq!(
            desired(&s, 24),
            Live {
                primary: 1,
                secondary: Some(0)
            }
        );
        assert_eq!(
            desired(&s, 25),
            Live {
                primary: 1,
                secondary: None
            }
        );
        assert_eq!(s.epoch_at(24 * 3600 + 5), 24);
        assert_eq!(s.rotation_of(47), 1);
        assert_eq!(s.rotation_of(48), 2);
    }

    #[test]
    fn following_the_plan_epoch_by_epoch_reaches_every_desired_state_in_one_step() {
        let s = Schedule {
            genesis: 0,
            epoch_length: 60,
            validity_epochs: 4,
        };
        let mut cur = desired(&s, 0);
        let mut steps = Vec::new();
        for e in 1..40 {
            let want = desired(&s, e);
            let step = plan(cur, want);
            assert!(
                !matches!(step, Step::Reset(_)),
                "epoch {e}: {cur:?} -> {want:?}"
            );
            cur = apply(cur, step);
            assert_eq!(cur, want, "epoch {e}");
            steps.push(step);
            // never more than two keys, and the parities of two live keys differ
            if let Some(sec) = cur.secondary {
                assert_ne!(sec % 2, cur.primary % 2);
            }
        }
        assert!(steps.contains(&Step::PreAnnounce(1)));
        assert!(steps.contains(&Step::Swap));
        assert!(steps.contains(&Step::Purge));
    }

    #[test]
    fn a_node_made_in_the_epoch_after_a_swap_keeps_its_primary() {
        let s = Schedule::default();
        let want = desired(&s, 24);
        assert_eq!(
            want,
            Live {
                primary: 1,
                secondary: Some(0)
            }
        );
        let fresh = Live {
            primary: 1,
            secondary: None,
        };
        assert_eq!(plan(fresh, want), Step::Nothing);
        let stray = Live {
            primary: 1,
            secondary: Some(2),
        };
        assert_eq!(plan(stray, want), Step::Purge);
        // An hour later the schedule wants what the node has.
        assert_eq!(plan(fresh, desired(&s, 25)), Step::Nothing);
    }

    #[test]
    fn a_node_down_across_rotations_resets() {
        let s = Schedule::default();
        let cur = desired(&s, 10);
        let want = desired(&s, 100);
        assert_eq!(plan(cur, want), Step::Reset(want));
    }
}
