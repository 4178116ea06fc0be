//! The rotation as nym-api gives it: `GET /v1/epoch/key-rotation-info`.
//!
//! The document is nym-api's `KeyRotationInfoResponse` (crate `nym-api-requests` 2.0.0), JSON:
//!
//! ```json
//! {
//!   "key_rotation_state": { "validity_epochs": 24, "initial_epoch_id": 22000 },
//!   "current_absolute_epoch_id": 22530,
//!   "current_epoch_start": "2025-07-01T10:00:00Z",
//!   "epoch_duration": { "secs": 3600, "nanos": 0 },
//!   "progress": {
//!     "current_key_rotation_id": 22,
//!     "current_rotation_starting_epoch": 22528,
//!     "current_rotation_ending_epoch": 22551
//!   }
//! }
//! ```
//!
//! `current_epoch_start` is RFC 3339; `epoch_duration` is serde's form of a `Duration`.
//! `progress` is derived by nym-api from the rest; when present it must agree with it.
//!
//! **The rule** (nym-node's `KeyRotationController`, nym-node 1.x): the rotation id of absolute
//! epoch `e` is `(e - initial_epoch_id) / validity_epochs`; rotation `r` starts at epoch
//! `initial_epoch_id + r * validity_epochs`. Epoch `e` starts at
//! `current_epoch_start + (e - current_absolute_epoch_id) * epoch_duration`. nym-node
//! pre-announces the key of rotation `r + 1` at the start of the last epoch of rotation `r`,
//! swaps to it at the start of rotation `r + 1`'s first epoch, and purges the key of `r` at the
//! start of the second epoch of `r + 1`. That is [`super::desired`] on a [`Schedule`] whose epoch
//! 0 is `initial_epoch_id` ([`KeyRotationInfo::schedule`]), so the same [`super::plan`] steps
//! apply.
//!
//! Epochs end when the chain says so, not by the clock; nym-node takes no new step while the
//! latest document's epoch is overdue. mixplane keeps to the same bound:
//! [`KeyRotationInfo::epoch_at`] is the epoch the clock gives, but never before the document's
//! epoch and never more than one epoch after it. So while nym-api is stalled (or unreachable)
//! in the last epoch of a rotation, the node may swap at the boundary (both keys stay live) but
//! does not purge the old key, which clients go on using until nym-api moves on.

use serde::Deserialize;

use super::{Live, Schedule, desired};
use crate::topology::{self, FetchOptions, GetError};

/// The path of the document under nym-api's base URL (such as
/// `https://validator.nymtech.net/api`).
pub const PATH: &str = "/v1/epoch/key-rotation-info";

/// The most bytes a fetch reads (the real document is about 300).
const MAX_BYTES: u64 = 64 << 10;

/// The rotation, as nym-api reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyRotationInfo {
    /// Epochs a key is valid for (`key_rotation_state.validity_epochs`).
    pub validity_epochs: u32,
    /// The absolute epoch at which rotation 0 started (`key_rotation_state.initial_epoch_id`).
    pub initial_epoch_id: u32,
    /// The epoch in progress (`current_absolute_epoch_id`).
    pub current_epoch: u32,
    /// Unix time (seconds) at which the epoch in progress started (`current_epoch_start`).
    pub current_epoch_start: u64,
    /// Epoch length in whole seconds (`epoch_duration`, sub-second part dropped).
    pub epoch_secs: u64,
}

/// Why a key-rotation-info document was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RotationInfoError {
    /// Not JSON, or not nym-api's `KeyRotationInfoResponse`.
    #[error("key-rotation-info is not nym-api's document: {0}")]
    Json(String),
    /// A field's value is out of range.
    #[error("key-rotation-info: {field}: {message}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
    /// `progress` disagrees with the fields it is derived from.
    #[error(
        "key-rotation-info: progress says rotation {claimed} from epoch {claimed_start}, the state gives {rotation} from epoch {start}"
    )]
    Inconsistent {
        /// `progress.current_key_rotation_id`.
        claimed: u32,
        /// `progress.current_rotation_starting_epoch`.
        claimed_start: u32,
        /// The rotation id the state gives.
        rotation: u32,
        /// The starting epoch the state gives.
        start: u32,
    },
    /// Fetching failed (or the URL is not allowed).
    #[error("key-rotation-info from {url}: {message}")]
    Fetch {
        /// The URL.
        url: String,
        /// What went wrong.
        message: String,
    },
}

#[derive(Deserialize)]
struct RawState {
    validity_epochs: u32,
    initial_epoch_id: u32,
}

#[derive(Deserialize)]
struct RawDuration {
    secs: u64,
    nanos: u32,
}

#[derive(Deserialize)]
struct RawProgress {
    current_key_rotation_id: u32,
    current_rotation_starting_epoch: u32,
    current_rotation_ending_epoch: u32,
}

#[derive(Deserialize)]
struct RawInfo {
    key_rotation_state: RawState,
    current_absolute_epoch_id: u32,
    current_epoch_start: String,
    epoch_duration: RawDuration,
    progress: Option<RawProgress>,
}

/// The longest epoch accepted: a week (Nym's is an hour).
const MAX_EPOCH_SECS: u64 = 7 * 24 * 3600;

fn invalid(field: &'static str, message: impl Into<String>) -> RotationInfoError {
    RotationInfoError::Invalid {
        field,
        message: message.into(),
    }
}

/// Unix seconds of an RFC 3339 timestamp at or after 1970.
fn unix_of(s: &str) -> Result<u64, RotationInfoError> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map_err(|e| invalid("current_epoch_start", format!("`{s}`: {e}")))?;
    u64::try_from(t.unix_timestamp())
        .map_err(|_| invalid("current_epoch_start", format!("`{s}` is before 1970")))
}

impl KeyRotationInfo {
    /// Parses and checks a document: `validity_epochs` at least 3 (so the overlaps of
    /// neighbouring rotations do not touch), an epoch of 1 s to a week, the epoch in progress
    /// not before `initial_epoch_id`, and `progress` (if present) consistent with the rest.
    pub fn parse(text: &[u8]) -> Result<KeyRotationInfo, RotationInfoError> {
        let raw: RawInfo =
            serde_json::from_slice(text).map_err(|e| RotationInfoError::Json(e.to_string()))?;
        let s = &raw.key_rotation_state;
        if s.validity_epochs < 3 {
            return Err(invalid(
                "key_rotation_state.validity_epochs",
                format!("{} is below 3", s.validity_epochs),
            ));
        }
        let d = &raw.epoch_duration;
        if d.nanos >= 1_000_000_000 || !(1..=MAX_EPOCH_SECS).contains(&d.secs) {
            return Err(invalid(
                "epoch_duration",
                format!("{} s {} ns is not in 1 s..=1 week", d.secs, d.nanos),
            ));
        }
        if raw.current_absolute_epoch_id < s.initial_epoch_id {
            return Err(invalid(
                "current_absolute_epoch_id",
                format!(
                    "{} is before key_rotation_state.initial_epoch_id {}",
                    raw.current_absolute_epoch_id, s.initial_epoch_id
                ),
            ));
        }
        let info = KeyRotationInfo {
            validity_epochs: s.validity_epochs,
            initial_epoch_id: s.initial_epoch_id,
            current_epoch: raw.current_absolute_epoch_id,
            current_epoch_start: unix_of(&raw.current_epoch_start)?,
            epoch_secs: d.secs,
        };
        // rotation 0 must start at or after unix time 0, so the schedule's genesis exists
        let since_initial = u64::from(info.current_epoch - info.initial_epoch_id);
        if since_initial.saturating_mul(info.epoch_secs) > info.current_epoch_start {
            return Err(invalid(
                "current_epoch_start",
                "too early for the epochs since initial_epoch_id",
            ));
        }
        if let Some(p) = &raw.progress {
            info.check_progress(p)?;
        }
        Ok(info)
    }

    fn check_progress(&self, p: &RawProgress) -> Result<(), RotationInfoError> {
        let (rotation, start) = (
            self.current_rotation(),
            self.rotation_start(self.current_rotation()),
        );
        let end = u64::from(start) + u64::from(self.validity_epochs) - 1;
        if p.current_key_rotation_id != rotation
            || p.current_rotation_starting_epoch != start
            || u64::from(p.current_rotation_ending_epoch) != end
        {
            return Err(RotationInfoError::Inconsistent {
                claimed: p.current_key_rotation_id,
                claimed_start: p.current_rotation_starting_epoch,
                rotation,
                start,
            });
        }
        Ok(())
    }

    /// Fetches the document from nym-api at `base_url` (`base_url` + [`PATH`]), with the
    /// topology fetch's client and rules (https only unless `opts.allow_http`; at most 64 KiB
    /// are read, whatever `opts.max_bytes` says).
    pub fn fetch(
        base_url: &str,
        opts: &FetchOptions,
    ) -> Result<KeyRotationInfo, RotationInfoError> {
        let url = format!("{}{PATH}", base_url.trim_end_matches('/'));
        let body = topology::get(&url, opts, MAX_BYTES.min(opts.max_bytes)).map_err(|e| {
            RotationInfoError::Fetch {
                url: url.clone(),
                message: match e {
                    GetError::Insecure => "not an https:// URL (http needs allow_http)".into(),
                    GetError::TooLarge => format!("larger than {MAX_BYTES} bytes"),
                    GetError::Other(m) => m,
                },
            }
        })?;
        Self::parse(&body)
    }

    /// The rotation id of the epoch in progress.
    pub fn current_rotation(&self) -> u32 {
        (self.current_epoch - self.initial_epoch_id) / self.validity_epochs
    }

    /// The absolute epoch at which rotation `r` starts (saturating).
    pub fn rotation_start(&self, r: u32) -> u32 {
        self.initial_epoch_id
            .saturating_add(r.saturating_mul(self.validity_epochs))
    }

    /// The schedule this document implies: epoch 0 is `initial_epoch_id`, so the schedule's
    /// rotation ids are nym-api's.
    pub fn schedule(&self) -> Schedule {
        let since_initial = u64::from(self.current_epoch - self.initial_epoch_id);
        Schedule {
            genesis: self.current_epoch_start - since_initial * self.epoch_secs,
            epoch_length: self.epoch_secs,
            validity_epochs: u64::from(self.validity_epochs),
        }
    }

    /// The schedule's epoch (epochs since `initial_epoch_id`) to act on at unix time `now`:
    /// the clock's, but not before the document's epoch nor more than one after it.
    pub fn epoch_at(&self, now: u64) -> u64 {
        let reported = u64::from(self.current_epoch - self.initial_epoch_id);
        self.schedule().epoch_at(now).clamp(reported, reported + 1)
    }

    /// The keys that should be live at unix time `now`.
    pub fn desired_at(&self, now: u64) -> Live {
        desired(&self.schedule(), self.epoch_at(now))
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Step, apply, plan};
    use super::*;

    /// Written field by field after nym-api-requests 2.0.0's `KeyRotationInfoResponse`
    /// (`#[serde(flatten)] details` + `progress`), as nym-api serves it.
    const FIXTURE: &[u8] = include_bytes!("../../tests/fixtures/key_rotation_info.json");

    /// A document for epoch `e` (validity 4, initial 100, epochs of 60 s from unix 1_000_000).
    fn doc(e: u32) -> String {
        let (v, i) = (4u32, 100u32);
        let start = 1_000_000 + u64::from(e - i) * 60;
        let t = time::OffsetDateTime::from_unix_timestamp(start as i64)
            .unwrap()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap();
        let r = (e - i) / v;
        format!(
            r#"{{"key_rotation_state":{{"validity_epochs":{v},"initial_epoch_id":{i}}},"current_absolute_epoch_id":{e},"current_epoch_start":"{t}","epoch_duration":{{"secs":60,"nanos":0}},"progress":{{"current_key_rotation_id":{r},"current_rotation_starting_epoch":{},"current_rotation_ending_epoch":{}}}}}"#,
            i + r * v,
            i + r * v + v - 1
        )
    }

    #[test]
    fn parses_the_real_shaped_fixture() {
        let info = KeyRotationInfo::parse(FIXTURE).unwrap();
        assert_eq!(
            info,
            KeyRotationInfo {
                validity_epochs: 24,
                initial_epoch_id: 22000,
                current_epoch: 22530,
                // 2025-07-01T10:00:00.123456789Z
                current_epoch_start: 1_751_364_000,
                epoch_secs: 3600,
            }
        );
        assert_eq!(info.current_rotation(), 22);
        assert_eq!(info.rotation_start(22), 22528);
        // in the middle of the rotation: one key
        let now = info.current_epoch_start + 10;
        assert_eq!(
            info.desired_at(now),
            Live {
                primary: 22,
                secondary: None
            }
        );
        // the schedule puts the reported epoch at the reported time
        let s = info.schedule();
        assert_eq!(s.epoch_start(530), info.current_epoch_start);
        assert_eq!(s.rotation_of(530), 22);
    }

    #[test]
    fn steps_across_a_rotation_boundary_follow_nym_nodes_deadlines() {
        // rotation 1 is epochs 104..=107: pre-announce 2 at 107, swap at 108, purge at 109
        let at = |e: u32| 1_000_000 + u64::from(e - 100) * 60 + 1;
        let mut cur = KeyRotationInfo::parse(doc(105).as_bytes())
            .unwrap()
            .desired_at(at(105));
        assert_eq!(
            cur,
            Live {
                primary: 1,
                secondary: None
            }
        );
        let mut steps = Vec::new();
        for e in 106..=113 {
            let info = KeyRotationInfo::parse(doc(e).as_bytes()).unwrap();
            let want = info.desired_at(at(e));
            let step = plan(cur, want);
            cur = apply(cur, step);
            assert_eq!(cur, want, "epoch {e}");
            steps.push((e, step));
        }
        assert_eq!(
            steps,
            vec![
                (106, Step::Nothing),
                (107, Step::PreAnnounce(2)),
                (108, Step::Swap),
                (109, Step::Purge),
                (110, Step::Nothing),
                (111, Step::PreAnnounce(3)),
                (112, Step::Swap),
                (113, Step::Purge),
            ]
        );
    }

    #[test]
    fn a_stale_document_never_lets_the_node_purge() {
        // nym-api still reports epoch 107 (the rotation's last) long after it should have ended
        let info = KeyRotationInfo::parse(doc(107).as_bytes()).unwrap();
        let late = 1_000_000 + 7 * 60 + 5 * 3600;
        assert_eq!(info.epoch_at(late), 8); // 108 - 100: the swap, no further
        assert_eq!(
            info.desired_at(late),
            Live {
                primary: 2,
                secondary: Some(1)
            }
        );
        // a clock behind the document: the document's epoch
        assert_eq!(info.epoch_at(0), 7);
    }

    #[test]
    fn bad_or_hostile_documents_are_refused_with_typed_errors() {
        let good = doc(105);
        let with = |from: &str, to: &str| {
            assert!(good.contains(from), "{from}");
            good.replace(from, to)
        };
        let cases: Vec<(String, &str)> = vec![
            ("not json".into(), "json"),
            ("{}".into(), "json"),
            (
                with("\"validity_epochs\":4", "\"validity_epochs\":0"),
                "key_rotation_state.validity_epochs",
            ),
            (
                with("\"validity_epochs\":4", "\"validity_epochs\":2"),
                "key_rotation_state.validity_epochs",
            ),
            (
                with("\"validity_epochs\":4", "\"validity_epochs\":-4"),
                "json",
            ),
            (with("\"secs\":60", "\"secs\":0"), "epoch_duration"),
            (
                with("\"secs\":60", "\"secs\":99999999999"),
                "epoch_duration",
            ),
            (
                with("\"nanos\":0", "\"nanos\":4000000000"),
                "epoch_duration",
            ),
            (
                with(
                    "\"current_absolute_epoch_id\":105",
                    "\"current_absolute_epoch_id\":99",
                ),
                "current_absolute_epoch_id",
            ),
            (
                with(
                    "\"current_absolute_epoch_id\":105",
                    "\"current_absolute_epoch_id\":4294967296",
                ),
                "json",
            ),
            (
                with("1970-01-12T13:51:40Z", "yesterday"),
                "current_epoch_start",
            ),
            (
                with("1970-01-12T13:51:40Z", "1969-12-31T23:00:00Z"),
                "current_epoch_start",
            ),
            (
                with("1970-01-12T13:51:40Z", "1970-01-01T00:01:00Z"),
                "current_epoch_start",
            ),
            (
                with(
                    "\"current_key_rotation_id\":1",
                    "\"current_key_rotation_id\":7",
                ),
                "inconsistent",
            ),
            (
                with(
                    "\"current_rotation_ending_epoch\":107",
                    "\"current_rotation_ending_epoch\":4000",
                ),
                "inconsistent",
            ),
        ];
        for (text, want) in cases {
            let e = KeyRotationInfo::parse(text.as_bytes()).unwrap_err();
            let got = match &e {
                RotationInfoError::Json(_) => "json",
                RotationInfoError::Invalid { field, .. } => field,
                RotationInfoError::Inconsistent { .. } => "inconsistent",
                RotationInfoError::Fetch { .. } => "fetch",
            };
            assert_eq!(got, want, "{text}: {e}");
        }
        // the same document without progress is accepted (progress is nym-api's convenience)
        let bare = good.split(",\"progress\"").next().unwrap().to_string() + "}";
        assert_eq!(
            KeyRotationInfo::parse(bare.as_bytes()).unwrap(),
            KeyRotationInfo::parse(good.as_bytes()).unwrap()
        );
    }

    #[test]
    fn fetch_is_https_only_unless_allowed() {
        let e = KeyRotationInfo::fetch("http://127.0.0.1:1", &FetchOptions::default()).unwrap_err();
        assert!(
            matches!(&e, RotationInfoError::Fetch { url, .. } if url == "http://127.0.0.1:1/v1/epoch/key-rotation-info"),
            "{e}"
        );
        assert!(e.to_string().contains("https"), "{e}");
    }

    proptest::proptest! {
        #[test]
        fn any_accepted_document_plans_without_overflow(
            v in 0u32..100, i: u32, d in 0u32..100_000, secs in 0u64..1_000_000, start in 0i64..253_000_000_000, now: u64,
        ) {
            let e = i.saturating_add(d);
            let t = time::OffsetDateTime::from_unix_timestamp(start)
                .unwrap()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap();
            let text = format!(
                r#"{{"key_rotation_state":{{"validity_epochs":{v},"initial_epoch_id":{i}}},"current_absolute_epoch_id":{e},"current_epoch_start":"{t}","epoch_duration":{{"secs":{secs},"nanos":0}}}}"#
            );
            if let Ok(info) = KeyRotationInfo::parse(text.as_bytes()) {
                let live = info.desired_at(now);
                let r = info.current_rotation();
                proptest::prop_assert!(live.primary == r || live.primary == r + 1);
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(b in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            let _ = KeyRotationInfo::parse(&b);
        }
    }
}
