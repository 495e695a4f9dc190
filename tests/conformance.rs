//! One conformance suite for every vendor: the same cases run against each vendor's simulator
//! over real HTTP on loopback, through one table ([`VENDORS`]). A vendor contributes one entry:
//! how to start its simulator, its target's config keys, its truth, its APIs with their
//! documented QPS, its documented error codes, and its secrets. A fifth vendor gets every case
//! by adding one entry (and `docs/fault-matrix.md` then asks for its column).
//!
//! The cases, for each vendor, against one exporter whose clock and the simulator's stand
//! still (the truth cannot move between a poll and the check):
//!
//! - the room series equal the simulator's truth, at the start and after every case;
//! - every fault switch that applies to the vendor ([`Switch`]) and every documented error code
//!   fails the poll (`rtc_exporter_target_up 0`) with its outcome label on
//!   `rtc_exporter_vendor_requests_total` (and the code's `code` label), while the data series
//!   keep the last good values for as long as fewer than `stale_after` polls failed; the
//!   valid-but-odd switches (numbers as strings, missing optional fields) keep the target up
//!   and the users equal to the truth;
//! - `stale_after` failed polls drop the data series, and the next good poll brings them back;
//! - the simulator never sees more than the documented QPS of an API (counted on the
//!   simulator's side, by the vendor's own measure: a bucket of one second of requests);
//! - no secret appears in a log line (every level, every module, captured in process), an
//!   error, the `/` page or `/metrics`; and, with the real binary at `--log.level=debug`, in
//!   its stderr.
//!
//! What every vendor did is the fault matrix: the test renders it and fails if
//! `docs/fault-matrix.md` differs, printing the expected text (or writing it with
//! `RTC_UPDATE_FAULT_MATRIX=1`).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::time::Instant;

use common::{samples, Sample};
use futures_util::future::BoxFuture;
use rtc_exporter::app::{self, Running};
use rtc_exporter::clock::ManualClock;
use rtc_exporter::model::Device;
use rtc_exporter::sim::agora::AgoraSim;
use rtc_exporter::sim::alibaba_artc::ArtcSim;
use rtc_exporter::sim::livekit::LkSim;
use rtc_exporter::sim::scenario::{Call, Session};
use rtc_exporter::sim::talkcloud::TalkSim;
use rtc_exporter::sim::tencent_trtc::TrtcSim;
use rtc_exporter::sim::ucloud_urtc::UrtcSim;
use rtc_exporter::sim::volcengine_rtc::VolcSim;
use rtc_exporter::sim::zego::ZegoSim;
use rtc_exporter::sim::{Fault, Faults, SimRequest, SimResponse, SimServer, Simulator};
use rtc_exporter::snapshot::TargetView;

// ---------------------------------------------------------------------------------------------
// The table

/// What the exporter must show for one room.
#[derive(Debug, Clone, PartialEq)]
struct Expect {
    room: String,
    users: u64,
    active: bool,
    /// Exact where the vendor's figures are exact; `None`: a lower bound (at least `users`).
    peak: Option<u64>,
    accumulated: Option<u64>,
}

/// One vendor's entry.
struct Vendor {
    /// The registry name (`vendor:`).
    name: &'static str,
    /// Its simulator, clock frozen, and the time it stands at.
    sim: fn(seed: u64) -> (Arc<dyn Simulator>, i64),
    /// The target's vendor keys, as YAML lines indented by four.
    keys: fn(&dyn Simulator) -> String,
    /// The room series at `at`.
    truth: fn(&dyn Simulator, at: i64) -> Vec<Expect>,
    faults: fn(&dyn Simulator) -> &Faults,
    /// Every API the target uses: its name (fault key and `api` label) and documented QPS.
    apis: &'static [(&'static str, f64)],
    /// The API (of `apis`) a request goes to, as the simulator sees it.
    api_of: fn(&SimRequest) -> Option<&'static str>,
    /// Documented error codes, and one undocumented: (code sent, `code` label, outcome).
    codes: &'static [(&'static str, &'static str, &'static str)],
    /// Fault switches that do not apply to the vendor, and why.
    not_applicable: &'static [(Switch, &'static str)],
    /// What must never be shown.
    secrets: fn(&dyn Simulator) -> Vec<String>,
}

fn downcast<T: 'static>(sim: &dyn Simulator) -> &T {
    sim.as_any()
        .downcast_ref::<T>()
        .expect("the vendor's simulator")
}

fn midnight(t: i64) -> i64 {
    t - t.rem_euclid(86_400)
}

/// A form or query parameter.
fn param(raw: &[u8], key: &str) -> Option<String> {
    form_urlencoded::parse(raw)
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

/// Talk-cloud: the seeded classes at a fixed time (12:00 UTC, every class within the day).
const TALK_T0: i64 = 1_795_176_000;
const TALK_ROOMS: [&str; 4] = ["7100000001", "7100000002", "7100000003", "open-day"];

static VENDORS: &[Vendor] = &[
    Vendor {
        name: "ucloud_urtc",
        sim: |seed| {
            // More than one page of calls whatever the time of day: over 100 calls running now
            // (the seed decides which), listed by any window that ends now.
            let sim = UrtcSim::new(seed, 180);
            let at = sim.clock.now();
            sim.clock.freeze(at);
            assert!(sim.call_count(at, at) > 100, "{} calls", sim.call_count(at, at));
            (Arc::new(sim), at)
        },
        keys: |sim| {
            let u = downcast::<UrtcSim>(sim);
            format!(
                "    app_id: {}\n    credentials:\n      public_key: {}\n      private_key: \"{}\"\n",
                u.app_id,
                u.public_key,
                u.private_key()
            )
        },
        truth: |sim, at| {
            downcast::<UrtcSim>(sim)
                .truth(midnight(at), at)
                .into_iter()
                .map(|t| Expect {
                    room: t.room,
                    users: t.users,
                    active: t.active,
                    peak: Some(t.peak),
                    accumulated: Some(t.accumulated),
                })
                .collect()
        },
        faults: |sim| &downcast::<UrtcSim>(sim).faults,
        apis: &[("QueryURtcOnlineUsers", 10.0)],
        api_of: |req| {
            let action = param(req.query.as_bytes(), "Action").or(param(&req.body, "Action"));
            (action.as_deref() == Some("QueryURtcOnlineUsers")).then_some("QueryURtcOnlineUsers")
        },
        codes: &[
            ("110", "110", "error"),
            ("130", "130", "error"),
            ("150", "150", "error"),
            ("151", "151", "error"),
            ("152", "152", "error"),
            ("153", "153", "throttled"),
            ("160", "160", "error"),
            ("161", "161", "error"),
            ("170", "170", "error"),
            ("171", "171", "error"),
            ("172", "172", "error"),
            ("200", "200", "error"),
            ("210", "210", "error"),
            ("220", "220", "error"),
            ("230", "230", "error"),
            ("300", "300", "error"),
            ("999", "999", "error"),
            ("4242", "other", "error"),
        ],
        not_applicable: &[],
        secrets: |sim| vec![downcast::<UrtcSim>(sim).private_key()],
    },
    Vendor {
        name: "volcengine_rtc",
        sim: |seed| {
            let sim = VolcSim::new(seed, 10);
            sim.clock.freeze(sim.t0());
            let at = sim.t0();
            (Arc::new(sim), at)
        },
        keys: |sim| {
            let v = downcast::<VolcSim>(sim);
            format!(
                "    app_id: \"{}\"\n    credentials:\n      access_key_id: {}\n      secret_access_key: \"{}\"\n    rooms: [{}]\n",
                v.app_id,
                v.access_key_id,
                v.secret_access_key(),
                v.generated_rooms().join(", ")
            )
        },
        truth: |sim, _| {
            let v = downcast::<VolcSim>(sim);
            v.generated_rooms()
                .into_iter()
                .map(|room| {
                    let t = v.room_truth(&room);
                    // Without `devices: true` bots cannot be told apart: they count as users.
                    Expect {
                        room,
                        users: t.users + t.bots,
                        active: t.active,
                        peak: None,
                        accumulated: None,
                    }
                })
                .collect()
        },
        faults: |sim| &downcast::<VolcSim>(sim).faults,
        apis: &[("GetRoomOnlineUsers", 40.0)],
        api_of: |req| {
            let property = param(req.query.as_bytes(), "Property");
            match param(req.query.as_bytes(), "Action").as_deref() {
                Some("GetRoomOnlineUsers") if property.as_deref() != Some("true") => {
                    Some("GetRoomOnlineUsers")
                }
                _ => None,
            }
        },
        codes: &[
            ("InvalidTimestamp", "InvalidTimestamp", "error"),
            ("InvalidAccessKey", "InvalidAccessKey", "error"),
            ("SignatureDoesNotMatch", "SignatureDoesNotMatch", "error"),
            ("MissingParameter", "MissingParameter", "error"),
            ("InternalError", "InternalError", "error"),
            ("FlowLimitExceeded", "FlowLimitExceeded", "throttled"),
            (
                "FlowLimitExceeded.QPSOverLimit",
                "FlowLimitExceeded",
                "throttled",
            ),
            ("AccountFlowLimitExceeded", "FlowLimitExceeded", "throttled"),
            ("InvalidParameter.RoomId", "InvalidParameter", "error"),
            ("AccountFrozen", "other", "error"),
        ],
        not_applicable: &[
            (
                Switch::EmptyLaterPages,
                "`GetRoomOnlineUsers` answers one room in one page",
            ),
            (
                Switch::LoseRows,
                "`GetRoomOnlineUsers` tells who is in now: an empty room is a valid answer, nothing earlier to contradict",
            ),
        ],
        secrets: |sim| vec![downcast::<VolcSim>(sim).secret_access_key().to_string()],
    },
    Vendor {
        name: "tencent_trtc",
        sim: |seed| {
            let sim = TrtcSim::new(seed, 8);
            let at = sim.clock.now();
            sim.clock.freeze(at);
            // A call of 150 users: two pages of DescribeUserInfo.
            let sessions = (0..150)
                .map(|i| Session {
                    user: format!("big-{i:03}"),
                    join: at - 3500 + i * 10,
                    leave: at + 3000,
                    device: [Device::Ios, Device::Android, Device::Web][i as usize % 3],
                    invisible: false,
                    bot: None,
                })
                .collect();
            sim.add_call(
                "big-call",
                Call {
                    id: "big-call-1".into(),
                    start: at - 3600,
                    end: at + 3600,
                    sessions,
                },
            );
            (Arc::new(sim), at)
        },
        keys: |sim| {
            let s = downcast::<TrtcSim>(sim);
            format!(
                "    sdk_app_id: {}\n    region: ap-guangzhou\n    credentials:\n      secret_id: {}\n      secret_key: \"{}\"\n",
                s.sdk_app_id,
                s.secret_id,
                s.secret_key()
            )
        },
        truth: |sim, at| {
            // The default `delay`: users are fetched up to a minute ago.
            downcast::<TrtcSim>(sim)
                .truth(midnight(at), at - 60)
                .rooms
                .into_iter()
                .map(|(room, t)| Expect {
                    room,
                    users: t.users,
                    active: t.active,
                    peak: Some(t.peak),
                    accumulated: Some(t.accumulated),
                })
                .collect()
        },
        faults: |sim| &downcast::<TrtcSim>(sim).faults,
        apis: &[("DescribeRoomInfo", 20.0), ("DescribeUserInfo", 20.0)],
        api_of: |req| match req.header("x-tc-action").as_deref() {
            Some("DescribeRoomInfo") => Some("DescribeRoomInfo"),
            Some("DescribeUserInfo") => Some("DescribeUserInfo"),
            _ => None,
        },
        codes: &[
            (
                "AuthFailure.SignatureFailure",
                "AuthFailure.SignatureFailure",
                "error",
            ),
            (
                "AuthFailure.SignatureExpire",
                "AuthFailure.SignatureExpire",
                "error",
            ),
            (
                "AuthFailure.SecretIdNotFound",
                "AuthFailure.SecretIdNotFound",
                "error",
            ),
            ("AuthFailure.UnauthorizedOperation", "AuthFailure", "error"),
            ("RequestLimitExceeded", "RequestLimitExceeded", "throttled"),
            // The other throttle spellings of Tencent Cloud API 3.0's common error codes.
            (
                "RequestLimitExceeded.UinLimitExceeded",
                "RequestLimitExceeded",
                "throttled",
            ),
            (
                "RequestLimitExceeded.IPLimitExceeded",
                "RequestLimitExceeded",
                "throttled",
            ),
            (
                "RequestLimitExceeded.GlobalRegionUinLimitExceeded",
                "RequestLimitExceeded",
                "throttled",
            ),
            // A quota, not a rate: not a throttle.
            ("LimitExceeded", "other", "error"),
            (
                "InvalidParameter.QueryScaleOversize",
                "InvalidParameter.QueryScaleOversize",
                "error",
            ),
            (
                "InvalidParameter.StartTsOversize",
                "InvalidParameter.StartTsOversize",
                "error",
            ),
            (
                "InvalidParameter.PageSizeOversize",
                "InvalidParameter.PageSizeOversize",
                "error",
            ),
            ("InvalidParameter.SdkAppId", "InvalidParameter", "error"),
            ("FailedOperation.NotAbility", "FailedOperation", "error"),
            ("InternalError.DbError", "InternalError", "error"),
            ("MissingParameter.CommId", "MissingParameter", "error"),
            ("ResourceUnavailable", "other", "error"),
        ],
        not_applicable: &[],
        secrets: |sim| vec![downcast::<TrtcSim>(sim).secret_key()],
    },
    Vendor {
        name: "talkcloud",
        sim: |seed| {
            let sim = TalkSim::at(seed, TALK_T0);
            sim.clock.freeze(TALK_T0);
            (Arc::new(sim), TALK_T0)
        },
        keys: |sim| {
            format!(
                "    credentials:\n      key: \"{}\"\n    rooms: [\"{}\", \"{}\", \"{}\", {{ thirdroomid: {} }}]\n",
                downcast::<TalkSim>(sim).key(),
                TALK_ROOMS[0],
                TALK_ROOMS[1],
                TALK_ROOMS[2],
                TALK_ROOMS[3]
            )
        },
        truth: |sim, at| {
            let s = downcast::<TalkSim>(sim);
            TALK_ROOMS
                .iter()
                .map(|room| {
                    let t = s.truth(room, midnight(at), at);
                    Expect {
                        room: room.to_string(),
                        users: t.users,
                        active: t.users > 0,
                        peak: Some(t.peak),
                        accumulated: Some(t.accumulated),
                    }
                })
                .collect()
        },
        faults: |sim| &downcast::<TalkSim>(sim).faults,
        apis: &[("getLiveLogininfo", 5.0)],
        api_of: |req| {
            (req.path == rtc_exporter::sim::talkcloud::PATH).then_some("getLiveLogininfo")
        },
        codes: &[
            ("4101", "4101", "error"),
            ("4102", "4102", "error"),
            ("4007", "4007", "error"),
            ("3001", "3001", "error"),
            ("4108", "4108", "error"),
            ("-1", "-1", "error"),
            ("4999", "other", "error"),
        ],
        not_applicable: &[],
        secrets: |sim| vec![downcast::<TalkSim>(sim).key().to_string()],
    },
    Vendor {
        name: "agora",
        sim: |seed| {
            // Pages of 3 channels: the listing takes several pages. Without `devices` (as
            // Volcengine's entry): platforms, sampled between polls, grow from poll to poll
            // and are checked in tests/agora.rs.
            let sim = AgoraSim::new(seed, 16);
            let at = sim.clock.now();
            sim.clock.freeze(at);
            let n = sim.truth(at).len();
            assert!(n >= 7, "{n} channels in progress");
            (Arc::new(sim), at)
        },
        keys: |sim| {
            let a = downcast::<AgoraSim>(sim);
            format!(
                "    app_id: \"{}\"\n    page_size: 3\n    devices: false\n    credentials:\n      customer_id: \"{}\"\n      customer_secret: \"{}\"\n",
                a.app_id,
                a.customer_id,
                a.secret()
            )
        },
        truth: |sim, at| {
            downcast::<AgoraSim>(sim)
                .truth(at)
                .into_iter()
                .map(|t| Expect {
                    room: t.channel,
                    users: t.users,
                    active: true,
                    peak: None,
                    accumulated: None,
                })
                .collect()
        },
        faults: |sim| &downcast::<AgoraSim>(sim).faults,
        apis: &[("QueryChannelList", 20.0), ("QueryUserList", 20.0)],
        api_of: |req| rtc_exporter::sim::agora::api_of(&req.path),
        codes: &[
            ("400", "400", "error"),
            ("401", "401", "error"),
            ("403", "403", "error"),
            ("404", "404", "error"),
            ("415", "415", "error"),
            ("429", "429", "throttled"),
            ("500", "500", "error"),
            ("503", "other", "error"),
        ],
        not_applicable: &[(
            Switch::LoseRows,
            "the channel list is who is in now: every channel ended is a valid answer (a channel missing from one listing keeps its figures; a second listing without it ends it)",
        )],
        secrets: |sim| vec![downcast::<AgoraSim>(sim).secret()],
    },
    Vendor {
        name: "livekit",
        sim: |seed| {
            let sim = LkSim::new(seed, 12);
            let at = sim.clock.now();
            sim.clock.freeze(at);
            let busy = sim.truth(at).iter().filter(|t| t.users > 0).count();
            assert!(busy > 0, "no room with people in it");
            (Arc::new(sim), at)
        },
        keys: |sim| {
            let s = downcast::<LkSim>(sim);
            format!(
                "    credentials:\n      api_key: {}\n      api_secret: \"{}\"\n",
                s.api_key,
                s.api_secret()
            )
        },
        truth: |sim, at| {
            // The clock stands still: the rooms listed now are every room the exporter sees.
            downcast::<LkSim>(sim)
                .truth(at)
                .into_iter()
                .filter(|t| t.active)
                .map(|t| Expect {
                    room: t.room,
                    users: t.users,
                    active: t.active,
                    peak: None,
                    accumulated: None,
                })
                .collect()
        },
        faults: |sim| &downcast::<LkSim>(sim).faults,
        apis: &[("ListRooms", 10.0), ("ListParticipants", 10.0)],
        api_of: |req| match req.path.strip_prefix(rtc_exporter::sim::livekit::PREFIX) {
            Some("ListRooms") => Some("ListRooms"),
            Some("ListParticipants") => Some("ListParticipants"),
            _ => None,
        },
        codes: &[
            ("unauthenticated", "unauthenticated", "error"),
            ("permission_denied", "permission_denied", "error"),
            ("resource_exhausted", "resource_exhausted", "throttled"),
            ("invalid_argument", "invalid_argument", "error"),
            // Not `not_found`: from `ListParticipants` it is a valid answer (the room ended since
            // it was listed: 0, ended), which tests/answers/livekit-room-ended-between-calls.yaml
            // covers; `ListRooms` never sends it.
            ("internal", "internal", "error"),
            ("unavailable", "unavailable", "error"),
            ("quota_exceeded", "other", "error"),
        ],
        not_applicable: &[
            (
                Switch::EmptyLaterPages,
                "no paging: one answer lists every room, one every participant of a room",
            ),
            (
                Switch::LoseRows,
                "`ListRooms` lists the rooms that exist now: a room no longer listed has ended",
            ),
            (
                Switch::TotalLarger,
                "no total in the answer: `num_participants` comes from another request and leaves hidden and dependent participants out",
            ),
            (
                Switch::TotalSmaller,
                "no total in the answer: `num_participants` comes from another request and leaves hidden and dependent participants out",
            ),
            (
                Switch::AbsentList,
                "protojson leaves an empty list out when the server skips defaults: an absent list is an empty one",
            ),
        ],
        secrets: |sim| vec![downcast::<LkSim>(sim).api_secret()],
    },
    Vendor {
        name: "alibaba_artc",
        sim: |seed| {
            // Pages of 3 channels: the listing takes several pages.
            let sim = ArtcSim::new(seed, 16);
            let at = sim.clock.now();
            sim.clock.freeze(at);
            let n = sim.truth(at).len();
            assert!(n >= 7, "{n} channels in progress");
            (Arc::new(sim), at)
        },
        keys: |sim| {
            let a = downcast::<ArtcSim>(sim);
            format!(
                "    app_id: \"{}\"\n    page_size: 3\n    credentials:\n      access_key_id: \"{}\"\n      access_key_secret: \"{}\"\n",
                a.app_id,
                a.access_key_id,
                a.secret()
            )
        },
        truth: |sim, at| {
            downcast::<ArtcSim>(sim)
                .truth(at)
                .into_iter()
                .map(|t| Expect {
                    room: t.channel,
                    users: t.users,
                    active: true,
                    peak: None,
                    accumulated: None,
                })
                .collect()
        },
        faults: |sim| &downcast::<ArtcSim>(sim).faults,
        apis: &[("DescribeChannels", 10.0), ("DescribeChannelUsers", 100.0)],
        api_of: rtc_exporter::sim::alibaba_artc::api_of,
        codes: &[
            ("SignatureDoesNotMatch", "SignatureDoesNotMatch", "error"),
            ("IncompleteSignature", "IncompleteSignature", "error"),
            (
                "InvalidAccessKeyId.NotFound",
                "InvalidAccessKeyId.NotFound",
                "error",
            ),
            (
                "InvalidAccessKeyId.Inactive",
                "InvalidAccessKeyId.Inactive",
                "error",
            ),
            ("SignatureNonceUsed", "SignatureNonceUsed", "error"),
            ("InvalidTimeStamp.Expired", "InvalidTimeStamp.Expired", "error"),
            ("Forbidden.RAM", "Forbidden.RAM", "error"),
            ("InvalidParameter", "InvalidParameter", "error"),
            ("InternalError", "InternalError", "error"),
            ("ServiceUnavailable", "ServiceUnavailable", "error"),
            ("Throttling.User", "Throttling.User", "throttled"),
            ("Throttling", "Throttling", "throttled"),
            ("Throttling.Api", "Throttling.Api", "throttled"),
            ("InvalidAppId.NotFound", "other", "error"),
        ],
        not_applicable: &[(
            Switch::LoseRows,
            "the channel list is who is in now: every channel ended is a valid answer",
        )],
        secrets: |sim| vec![downcast::<ArtcSim>(sim).secret()],
    },
    Vendor {
        name: "zego",
        sim: |seed| {
            // Lists of 15: rooms of more than 15 users take two Marker pages (one a second
            // per room). The configured rooms are every class and a room no class
            // uses (it counts 0).
            // The first seed from `seed` on whose rooms include one over a page.
            let found = (seed..seed + 100).find_map(|seed| {
                let sim = ZegoSim::new(seed, 8);
                let at = sim.clock.now();
                sim.clock.freeze(at);
                let busy = sim.truth(&sim.rooms(), at).iter().any(|t| t.users > 15);
                busy.then_some((sim, at))
            });
            let (sim, at) = found.expect("a room over one page within 100 seeds");
            (Arc::new(sim), at)
        },
        keys: |sim| {
            let z = downcast::<ZegoSim>(sim);
            let rooms: Vec<String> = z.rooms().iter().map(|r| format!("\"{r}\"")).collect();
            format!(
                "    app_id: {}\n    page_size: 15\n    rooms: [{}]\n    credentials:\n      server_secret: \"{}\"\n",
                z.app_id,
                rooms.join(", "),
                z.secret()
            )
        },
        truth: |sim, at| {
            let z = downcast::<ZegoSim>(sim);
            z.truth(&z.rooms(), at)
                .into_iter()
                .map(|t| Expect {
                    room: t.room,
                    active: t.users > 0,
                    users: t.users,
                    peak: None,
                    accumulated: None,
                })
                .collect()
        },
        faults: |sim| &downcast::<ZegoSim>(sim).faults,
        apis: &[("DescribeUserNum", 10.0), ("DescribeUserList", 10.0)],
        api_of: |req| rtc_exporter::sim::zego::api_of(&req.query),
        codes: &[
            ("206", "206", "throttled"),
            ("7", "7", "throttled"),
            ("2", "2", "error"),
            ("100000004", "100000004", "error"),
            ("100000005", "100000005", "error"),
            ("100000010", "100000010", "error"),
            ("4242", "other", "error"),
        ],
        not_applicable: &[
            (
                Switch::EmptyLaterPages,
                "a room's list is paged at most once a second: a later page can be empty because its users left meanwhile; against the count it shows as list_shorter_than_count",
            ),
            (
                Switch::LoseRows,
                "the counts and lists are who is in now: an empty room is a valid answer, nothing earlier to contradict",
            ),
        ],
        secrets: |sim| vec![downcast::<ZegoSim>(sim).secret()],
    },
];

// ---------------------------------------------------------------------------------------------
// Fault switches

/// The simulators' fault switches (`Fault`), as cases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Switch {
    Latency,
    HttpStatus,
    Reset,
    Malformed,
    NullList,
    EmptyLaterPages,
    LoseRows,
    PadBytes,
    PadBytesChunked,
    CodeAsString,
    MissingFields,
    TotalLarger,
    TotalSmaller,
    DuplicateRows,
    AbsentList,
}

/// Latency of the `latency` case, over `request_timeout`.
const LATENCY: Duration = Duration::from_millis(2500);
const REQUEST_TIMEOUT: &str = "1s";
/// `max_response_bytes` of the suite, and the padding of the `pad_bytes` case.
const MAX_RESPONSE: &str = "1MiB";
const PAD: usize = 2 << 20;
const STALE_AFTER: u32 = 6;

impl Switch {
    const ALL: [Switch; 15] = [
        Switch::Latency,
        Switch::HttpStatus,
        Switch::Reset,
        Switch::Malformed,
        Switch::NullList,
        Switch::EmptyLaterPages,
        Switch::LoseRows,
        Switch::PadBytes,
        Switch::PadBytesChunked,
        Switch::CodeAsString,
        Switch::MissingFields,
        Switch::TotalLarger,
        Switch::TotalSmaller,
        Switch::DuplicateRows,
        Switch::AbsentList,
    ];

    /// The row of the matrix.
    fn row(self) -> &'static str {
        match self {
            Switch::Latency => "`latency` 2.5 s (over `request_timeout` 1 s)",
            Switch::HttpStatus => "`http_status` 502 with an HTML page",
            Switch::Reset => "`reset`: the connection dropped",
            Switch::Malformed => "`malformed`: the body cut in half",
            Switch::NullList => "`null_list`: a null list, the total kept",
            Switch::EmptyLaterPages => "`empty_later_pages`: pages after the first empty",
            Switch::LoseRows => "`lose_rows`: rows seen before vanish",
            Switch::PadBytes => "`pad_bytes`: 2 MiB of whitespace after a valid body (cap 1 MiB)",
            Switch::PadBytesChunked => "`pad_bytes` and `chunked`: the same, no Content-Length",
            Switch::CodeAsString => "`code_as_string`: numbers as strings",
            Switch::MissingFields => "`missing_fields`: optional fields left out",
            Switch::TotalLarger => "`total_larger`: the declared total above the rows sent",
            Switch::TotalSmaller => "`total_smaller`: the declared total below the rows sent",
            Switch::DuplicateRows => "`duplicate_rows`: rows sent again on later pages",
            Switch::AbsentList => "`absent_list`: the list left out, its count kept",
        }
    }

    /// A valid answer that disagrees with itself: read (ok, up, the truth) and counted in
    /// `rtc_exporter_vendor_anomalies_total`.
    fn anomaly(self) -> bool {
        matches!(
            self,
            Switch::TotalLarger | Switch::TotalSmaller | Switch::DuplicateRows
        )
    }

    fn fault(self) -> Fault {
        let mut f = Fault::default();
        match self {
            Switch::Latency => f.latency = LATENCY,
            Switch::HttpStatus => f.http_status = Some(502),
            Switch::Reset => f.reset = true,
            Switch::Malformed => f.malformed = true,
            Switch::NullList => f.null_list = true,
            Switch::EmptyLaterPages => f.empty_later_pages = true,
            Switch::LoseRows => f.lose_rows = true,
            Switch::PadBytes => f.pad_bytes = PAD,
            Switch::PadBytesChunked => {
                f.pad_bytes = PAD;
                f.chunked = true;
            }
            Switch::CodeAsString => f.code_as_string = true,
            Switch::MissingFields => f.missing_fields = true,
            Switch::TotalLarger => f.total_larger = true,
            Switch::TotalSmaller => f.total_smaller = true,
            Switch::DuplicateRows => f.duplicate_rows = true,
            Switch::AbsentList => f.absent_list = true,
        }
        f
    }

    /// The outcome every vendor must count; `None`: a valid but odd answer (ok, up, the truth).
    fn outcome(self) -> Option<&'static str> {
        match self {
            Switch::Latency => Some("timeout"),
            Switch::HttpStatus => Some("error"),
            Switch::Reset => Some("transport"),
            Switch::Malformed
            | Switch::NullList
            | Switch::EmptyLaterPages
            | Switch::LoseRows
            | Switch::AbsentList => Some("malformed"),
            Switch::PadBytes | Switch::PadBytesChunked => Some("too_large"),
            Switch::CodeAsString
            | Switch::MissingFields
            | Switch::TotalLarger
            | Switch::TotalSmaller
            | Switch::DuplicateRows => None,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Counting on the simulator's side

/// A simulator that notes when each request arrives and for which API, then lets the
/// vendor's simulator answer.
struct Counting {
    inner: Arc<dyn Simulator>,
    api_of: fn(&SimRequest) -> Option<&'static str>,
    arrivals: Mutex<Vec<(Instant, Option<&'static str>)>>,
}

impl Simulator for Counting {
    fn vendor(&self) -> &'static str {
        self.inner.vendor()
    }
    fn handle<'a>(&'a self, req: SimRequest) -> BoxFuture<'a, SimResponse> {
        let api = (self.api_of)(&req);
        self.arrivals.lock().unwrap().push((Instant::now(), api));
        self.inner.handle(req)
    }
    fn demo_target(&self, endpoint: &str) -> serde_yaml::Value {
        self.inner.demo_target(endpoint)
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self.inner.as_any()
    }
}

/// Where `arrivals` of one API exceed `qps` by the vendor's measure (the simulators' throttle):
/// a bucket of `max(qps, 1)` requests, refilled at `qps` a second, that must never run dry.
fn over_qps(arrivals: &[Instant], qps: f64) -> Option<String> {
    let cap = qps.max(1.0);
    let mut tokens = cap;
    let mut last = *arrivals.first()?;
    for (i, t) in arrivals.iter().enumerate() {
        tokens = (tokens + t.duration_since(last).as_secs_f64() * qps).min(cap);
        last = *t;
        if tokens < 1.0 {
            return Some(format!(
                "request {i} of {} came with the bucket empty",
                arrivals.len()
            ));
        }
        tokens -= 1.0;
    }
    None
}

/// The most requests within any one second (for the report).
fn busiest_second(arrivals: &[Instant]) -> usize {
    let mut best = 0;
    let mut lo = 0;
    for hi in 0..arrivals.len() {
        while arrivals[hi].duration_since(arrivals[lo]) >= Duration::from_secs(1) {
            lo += 1;
        }
        best = best.max(hi - lo + 1);
    }
    best
}

// ---------------------------------------------------------------------------------------------
// Logs, captured in process at every level

static LOGS: Mutex<Vec<u8>> = Mutex::new(Vec::new());

struct Capture;

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOGS.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture_logs() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(|| Capture)
            .finish();
        tracing::subscriber::set_global_default(subscriber).unwrap();
    });
}

// ---------------------------------------------------------------------------------------------
// One vendor's run

/// What a case did: the outcome labels counted (non-ok ones, or `ok`), and `up`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    outcome: String,
    up: bool,
    /// Up, with rooms whose refresh failed: a partial poll.
    partial: bool,
    /// Anomaly kinds counted (`rtc_exporter_vendor_anomalies_total` grew).
    anomalies: Vec<String>,
}

impl Seen {
    fn cell(&self) -> String {
        let mut cell = format!("{}, up {}", self.outcome, u8::from(self.up));
        if self.partial {
            cell.push_str(" (partial: rooms failed)");
        }
        if !self.anomalies.is_empty() {
            cell.push_str(&format!(", anomaly {}", self.anomalies.join(" + ")));
        }
        cell
    }
}

/// Everything one vendor's run found.
#[derive(Default)]
struct Report {
    switches: BTreeMap<Switch, Seen>,
    codes: Vec<(String, String, Seen)>,
    problems: Vec<String>,
    /// (API, requests, most in one second, documented QPS).
    traffic: Vec<(&'static str, usize, usize, f64)>,
    secrets: Vec<String>,
}

struct Run {
    v: &'static Vendor,
    sim: Arc<dyn Simulator>,
    at: i64,
    target: String,
    base: String,
    exporter: Running,
    /// The data series at the last good poll.
    good: Vec<Sample>,
    report: Report,
}

/// A target's data series (`rtc_*` but the exporter's own and `rtc_target_info`), sorted.
fn data_series(text: &str, target: &str) -> Vec<Sample> {
    let mut v: Vec<Sample> = samples(text)
        .into_iter()
        .filter(|s| {
            s.name.starts_with("rtc_")
                && !s.name.starts_with("rtc_exporter_")
                && s.name != "rtc_target_info"
                && s.label("target") == Some(target)
        })
        .collect();
    for s in &mut v {
        s.labels.sort();
    }
    v.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.labels.cmp(&b.labels)));
    v
}

fn differences(got: &[Sample], want: &[Sample]) -> Vec<String> {
    let key = |s: &Sample| format!("{}{:?}", s.name, s.labels);
    let got: BTreeMap<String, f64> = got.iter().map(|s| (key(s), s.value)).collect();
    let want: BTreeMap<String, f64> = want.iter().map(|s| (key(s), s.value)).collect();
    let mut out = Vec::new();
    for (k, w) in &want {
        match got.get(k) {
            Some(g) if g == w => {}
            g => out.push(format!("{k}: {g:?}, last good {w}")),
        }
    }
    for k in got.keys().filter(|k| !want.contains_key(*k)) {
        out.push(format!("{k}: not there at the last good poll"));
    }
    out
}

impl Run {
    async fn scrape(&self) -> String {
        common::scrape(&self.base).await
    }

    fn gauge(&self, text: &str, name: &str) -> f64 {
        common::value(text, name, &[("target", &self.target)]).unwrap_or(-1.0)
    }

    fn polls(&self, text: &str, result: &str) -> f64 {
        common::value(
            text,
            "rtc_exporter_polls_total",
            &[("target", &self.target), ("result", result)],
        )
        .unwrap_or(0.0)
    }

    /// Requests by outcome, over every API of the target.
    fn outcomes(&self, text: &str) -> BTreeMap<String, f64> {
        let mut out = BTreeMap::new();
        for s in common::all(text, "rtc_exporter_vendor_requests_total") {
            if s.label("target") == Some(&self.target) {
                *out.entry(s.label("outcome").unwrap_or("").to_string())
                    .or_default() += s.value;
            }
        }
        out
    }

    fn code_count(&self, text: &str, label: &str) -> f64 {
        common::all(text, "rtc_exporter_vendor_errors_total")
            .iter()
            .filter(|s| s.label("target") == Some(&self.target) && s.label("code") == Some(label))
            .map(|s| s.value)
            .sum()
    }

    fn set_fault(&self, fault: &Fault) {
        for (api, _) in self.v.apis {
            (self.v.faults)(self.sim.as_ref()).set(api, fault.clone());
        }
    }

    fn problem(&mut self, p: String) {
        self.report.problems.push(format!("{}: {p}", self.v.name));
    }

    /// The exposition `/metrics` serves now, and the target's view it was rendered from
    /// (one snapshot: the counts of failed and empty polls belong to the text).
    fn snapshot(&self) -> (String, Arc<TargetView>) {
        let snap = self.exporter.board.snapshot();
        let view = snap.targets.get(&self.target).cloned().expect("the target");
        (String::from_utf8_lossy(&snap.text).into_owned(), view)
    }

    /// Looks until `check` holds (`None` after a minute).
    async fn wait(&self, check: impl Fn(&str, &TargetView) -> bool) -> Option<String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (text, view) = self.snapshot();
            if check(&text, &view) {
                return Some(text);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Where the scrape differs from the truth (`users_only`: the users and the series there).
    fn truth_mismatch(&self, text: &str, users_only: bool) -> Vec<String> {
        let truth = (self.v.truth)(self.sim.as_ref(), self.at);
        let mut bad = Vec::new();
        if truth.is_empty() {
            bad.push("the truth has no room".into());
        }
        let room = |metric: &str, room: &str| {
            common::value(text, metric, &[("target", &self.target), ("room", room)])
        };
        let shown: BTreeSet<String> = common::all(text, "rtc_room_users")
            .iter()
            .filter(|s| s.label("target") == Some(&self.target))
            .filter_map(|s| s.label("room").map(str::to_string))
            .collect();
        let want: BTreeSet<String> = truth.iter().map(|t| t.room.clone()).collect();
        if shown != want {
            bad.push(format!("rooms shown {shown:?}, truth {want:?}"));
        }
        for t in &truth {
            let users = room("rtc_room_users", &t.room);
            if users != Some(t.users as f64) {
                bad.push(format!("{} users {users:?}, truth {}", t.room, t.users));
            }
            if users_only {
                continue;
            }
            let active = room("rtc_room_active", &t.room);
            if active != Some(f64::from(u8::from(t.active))) {
                bad.push(format!("{} active {active:?}, truth {}", t.room, t.active));
            }
            for (metric, exact) in [
                ("rtc_room_peak_users", t.peak),
                ("rtc_room_accumulated_users", t.accumulated),
            ] {
                let got = room(metric, &t.room);
                let ok = match exact {
                    Some(n) => got == Some(n as f64),
                    None => got.is_some_and(|g| g >= t.users as f64),
                };
                if !ok {
                    bad.push(format!("{} {metric} {got:?}, truth {exact:?}", t.room));
                }
            }
        }
        bad
    }

    /// Waits for `more` good polls after `successes` and checks the last against the truth;
    /// it becomes the last good state. After a valid-but-odd answer, wait for two: the first
    /// may have begun before the change.
    async fn recovered(&mut self, what: &str, successes: f64, more: f64) {
        // A whole good poll: up, and no room failing (a partial poll is up too).
        let got = self
            .wait(|t, v| {
                self.polls(t, "success") >= successes + more && v.up && v.rooms_failed == 0
            })
            .await;
        let Some(text) = got else {
            self.problem(format!("{what}: no good poll within a minute"));
            return;
        };
        let bad = self.truth_mismatch(&text, false);
        if !bad.is_empty() {
            self.problem(format!(
                "{what}: the series differ from the truth:\n  {}",
                bad.join("\n  ")
            ));
        }
        self.good = data_series(&text, &self.target);
    }

    /// The secrets must be nowhere the exporter shows.
    async fn check_secrets(&mut self, what: &str) {
        let secrets = (self.v.secrets)(self.sim.as_ref());
        let metrics = self.scrape().await;
        let (status, landing) = common::get(&self.base, "/").await;
        let view = self.exporter.board.view(&self.target);
        let places = [
            ("/metrics", metrics),
            ("/", format!("{status} {landing}")),
            ("the view", format!("{view:?}")),
        ];
        for secret in &secrets {
            for (place, text) in &places {
                if text.contains(secret.as_str()) {
                    self.problem(format!("{what}: a secret in {place}"));
                }
            }
        }
    }

    /// One failing case: the fault set, at least two failed polls, then cleared.
    async fn failing(&mut self, what: &str, fault: Fault, code_label: Option<&str>) -> Seen {
        let before = self.snapshot().0;
        let polls_before = self.polls(&before, "success") + self.polls(&before, "failure");
        self.set_fault(&fault);
        // Two failed polls, or, where the fault fails some rooms while others answer, two
        // partial polls (up, the rooms failed).
        let after = self
            .wait(|t, v| {
                v.consecutive_failures >= 2
                    || (v.up
                        && v.rooms_failed > 0
                        && self.polls(t, "success") + self.polls(t, "failure")
                            >= polls_before + 2.0)
            })
            .await;
        let seen = match after {
            None => {
                self.problem(format!("{what}: not two failed polls within a minute"));
                Seen {
                    outcome: "no failure".into(),
                    up: true,
                    partial: false,
                    anomalies: Vec::new(),
                }
            }
            Some(after) => {
                let seen = self.judge(&before, &after);
                // Failed refreshes in a row: the target's, or in partial polls a room's.
                let failures = common::all(&after, "rtc_exporter_room_refresh_failures")
                    .iter()
                    .filter(|s| s.label("target") == Some(self.target.as_str()))
                    .map(|s| s.value)
                    .fold(
                        self.gauge(&after, "rtc_exporter_target_consecutive_failures"),
                        f64::max,
                    );
                // Fewer than stale_after failed polls: no room can have failed that often, so
                // every series keeps its last good value. (More only on a stalled machine;
                // `stale` checks the drop.)
                if failures < f64::from(STALE_AFTER) {
                    let diff = differences(&data_series(&after, &self.target), &self.good);
                    if !diff.is_empty() {
                        self.problem(format!(
                            "{what}: after {failures} failed polls the data series are not the last good ones:\n  {}",
                            diff.join("\n  ")
                        ));
                    }
                }
                if let Some(label) = code_label {
                    if self.code_count(&after, label) <= self.code_count(&before, label) {
                        self.problem(format!("{what}: code label {label} not counted"));
                    }
                }
                let error = self
                    .exporter
                    .board
                    .view(&self.target)
                    .and_then(|v| v.last_error.clone())
                    .unwrap_or_default();
                if error.is_empty() {
                    self.problem(format!("{what}: no last error"));
                }
                for secret in (self.v.secrets)(self.sim.as_ref()) {
                    if error.contains(&secret) {
                        self.problem(format!("{what}: a secret in the last error"));
                    }
                }
                self.check_secrets(what).await;
                seen
            }
        };
        let successes = self.polls(&self.snapshot().0, "success");
        (self.v.faults)(self.sim.as_ref()).clear();
        self.recovered(&format!("{what}, cleared"), successes, 1.0)
            .await;
        seen
    }

    /// A valid but odd answer: two good polls with it, users as the truth says.
    async fn odd(&mut self, what: &str, fault: Fault) -> Seen {
        let before = self.snapshot().0;
        let successes = self.polls(&before, "success");
        self.set_fault(&fault);
        let after = self
            .wait(|t, _| self.polls(t, "success") >= successes + 2.0)
            .await;
        let seen = match after {
            None => {
                self.problem(format!("{what}: not two good polls within a minute"));
                Seen {
                    outcome: "no success".into(),
                    up: false,
                    partial: false,
                    anomalies: Vec::new(),
                }
            }
            Some(after) => {
                let bad = self.truth_mismatch(&after, true);
                if !bad.is_empty() {
                    self.problem(format!(
                        "{what}: the users differ from the truth:\n  {}",
                        bad.join("\n  ")
                    ));
                }
                self.judge(&before, &after)
            }
        };
        let successes = self.polls(&self.snapshot().0, "success");
        (self.v.faults)(self.sim.as_ref()).clear();
        self.recovered(&format!("{what}, cleared"), successes, 2.0)
            .await;
        seen
    }

    /// The outcomes counted between two scrapes (the non-ok ones, else `ok`), and `up`.
    fn judge(&self, before: &str, after: &str) -> Seen {
        let (b, a) = (self.outcomes(before), self.outcomes(after));
        let grew: Vec<&str> = a
            .iter()
            .filter(|(k, n)| k.as_str() != "ok" && **n > b.get(*k).copied().unwrap_or(0.0))
            .map(|(k, _)| k.as_str())
            .collect();
        let kinds = |text: &str| -> BTreeMap<String, f64> {
            common::all(text, "rtc_exporter_vendor_anomalies_total")
                .into_iter()
                .filter(|s| s.label("target") == Some(self.target.as_str()))
                .filter_map(|s| Some((s.label("kind")?.to_string(), s.value)))
                .fold(BTreeMap::new(), |mut m, (k, v)| {
                    *m.entry(k).or_default() += v;
                    m
                })
        };
        let (kb, ka) = (kinds(before), kinds(after));
        let anomalies = ka
            .iter()
            .filter(|(k, n)| **n > kb.get(*k).copied().unwrap_or(0.0))
            .map(|(k, _)| k.clone())
            .collect();
        Seen {
            outcome: if grew.is_empty() {
                "ok".into()
            } else {
                grew.join(" + ")
            },
            up: self.gauge(after, "rtc_exporter_target_up") == 1.0,
            partial: self.gauge(after, "rtc_exporter_target_up") == 1.0
                && self.gauge(after, "rtc_exporter_target_rooms_failed") > 0.0,
            anomalies,
        }
    }

    /// `stale_after` failed polls in which no room answered drop every data series; a good poll
    /// brings them back.
    async fn stale(&mut self) {
        self.set_fault(&Switch::HttpStatus.fault());
        // The series go once no room answered `stale_after` polls in a row (a poll in flight
        // when the fault is set may have had some rooms answer).
        let after = self.wait(|_, v| v.consecutive_empty >= STALE_AFTER).await;
        match after {
            None => self.problem("stale: not stale_after failed polls within a minute".into()),
            Some(text) => {
                let data = data_series(&text, &self.target);
                if !data.is_empty() {
                    self.problem(format!(
                        "stale: {} data series left after stale_after failed polls",
                        data.len()
                    ));
                }
                if common::value(&text, "rtc_target_info", &[("target", &self.target)]) != Some(1.0)
                {
                    self.problem("stale: rtc_target_info went too".into());
                }
            }
        }
        let successes = self.polls(&self.snapshot().0, "success");
        (self.v.faults)(self.sim.as_ref()).clear();
        self.recovered("stale, cleared", successes, 1.0).await;
    }
}

/// The suite's global section.
fn global() -> String {
    format!(
        "global:\n  timezone: UTC\n  interval: 250ms\n  poll_timeout: 10s\n  request_timeout: {REQUEST_TIMEOUT}\n  stale_after: {STALE_AFTER}\n  max_response_bytes: {MAX_RESPONSE}\n"
    )
}

fn target_yaml(v: &Vendor, name: &str, endpoint: &str, sim: &dyn Simulator) -> String {
    format!(
        "  - name: {name}\n    vendor: {}\n    endpoint: {endpoint}\n{}",
        v.name,
        (v.keys)(sim)
    )
}

async fn run_vendor(v: &'static Vendor, seed: u64) -> Report {
    let (sim, at) = (v.sim)(seed);
    let counting = Arc::new(Counting {
        inner: sim.clone(),
        api_of: v.api_of,
        arrivals: Mutex::new(Vec::new()),
    });
    let server = SimServer::start(counting.clone(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let target = format!("conf-{}", v.name.replace('_', "-"));
    let text = format!(
        "{}targets:\n{}",
        global(),
        target_yaml(v, &target, &server.endpoint, sim.as_ref())
    );
    let clock = Arc::new(ManualClock::at(at));
    let exporter = app::start_with_clock(
        common::config(&text),
        &["127.0.0.1:0".to_string()],
        "/metrics",
        clock,
    )
    .await
    .expect("exporter starts");
    let base = exporter.url();
    let mut run = Run {
        v,
        sim,
        at,
        target,
        base,
        exporter,
        good: Vec::new(),
        report: Report::default(),
    };
    let started = Instant::now();

    run.recovered("the first poll", 0.0, 1.0).await;
    if run.good.is_empty() {
        run.problem("no data series at the first good poll".into());
    }
    for switch in Switch::ALL {
        if v.not_applicable.iter().any(|(s, _)| *s == switch) {
            continue;
        }
        let what = format!("{switch:?}");
        let seen = match switch.outcome() {
            Some(expected) => {
                let seen = run.failing(&what, switch.fault(), None).await;
                if seen.outcome != expected || (seen.up && !seen.partial) {
                    run.problem(format!(
                        "{what}: counted {} (expected {expected}, up 0 or a partial poll)",
                        seen.cell()
                    ));
                }
                seen
            }
            None => {
                let seen = run.odd(&what, switch.fault()).await;
                if seen.outcome != "ok" || !seen.up {
                    run.problem(format!(
                        "{what}: counted {} (expected ok, up 1)",
                        seen.cell()
                    ));
                }
                if switch.anomaly() && seen.anomalies.is_empty() {
                    run.problem(format!(
                        "{what}: read, but no anomaly counted in rtc_exporter_vendor_anomalies_total"
                    ));
                }
                seen
            }
        };
        run.report.switches.insert(switch, seen);
    }
    for (code, label, outcome) in v.codes {
        let what = format!("code {code}");
        let fault = Fault {
            code: Some(code.to_string()),
            ..Fault::default()
        };
        let seen = run.failing(&what, fault, Some(*label)).await;
        if seen.outcome != *outcome || (seen.up && !seen.partial) {
            run.problem(format!(
                "{what}: counted {} (expected {outcome}, up 0 or a partial poll)",
                seen.cell()
            ));
        }
        run.report
            .codes
            .push((code.to_string(), label.to_string(), seen));
    }
    run.stale().await;
    run.check_secrets("the end").await;

    // The simulator's count, API by API.
    let arrivals = counting.arrivals.lock().unwrap().clone();
    let unknown = arrivals.iter().filter(|(_, api)| api.is_none()).count();
    if unknown > 0 {
        run.problem(format!(
            "{unknown} requests to an API the table does not list"
        ));
    }
    for (api, qps) in v.apis {
        let times: Vec<Instant> = arrivals
            .iter()
            .filter(|(_, a)| *a == Some(*api))
            .map(|(t, _)| *t)
            .collect();
        if times.is_empty() {
            run.problem(format!("{api}: never asked"));
        }
        if let Some(over) = over_qps(&times, *qps) {
            run.problem(format!("{api}: more than {qps} QPS: {over}"));
        }
        run.report
            .traffic
            .push((api, times.len(), busiest_second(&times), *qps));
    }
    run.report.secrets = (v.secrets)(run.sim.as_ref());
    eprintln!(
        "{}: {} cases in {:.0?}",
        v.name,
        run.report.switches.len() + run.report.codes.len() + 1,
        started.elapsed()
    );
    run.exporter.stop().await.unwrap();
    run.report
}

// ---------------------------------------------------------------------------------------------
// The matrix

/// The fault matrix as `docs/fault-matrix.md` holds it.
fn matrix(reports: &[(&'static Vendor, Report)]) -> String {
    let mut md = String::new();
    md.push_str("# Fault matrix\n\n");
    md.push_str(
        "What each vendor's client does with each fault its simulator can inject: the outcome\n\
         label counted on `rtc_exporter_vendor_requests_total` and `rtc_exporter_target_up`.\n\
         Generated from what `tests/conformance.rs` observed, and checked by it: the test\n\
         fails if this file differs and prints the text to paste (or writes it with\n\
         `RTC_UPDATE_FAULT_MATRIX=1 cargo test --test conformance`). Do not edit by hand.\n\n\
         In every failing case the data series keep their last good values while fewer than\n\
         `stale_after` polls failed (checked), and are dropped at `stale_after` (checked once per\n\
         vendor); the valid-but-odd answers keep the target up with the users of the truth. Where a\n\
         fault fails only some rooms while others answer, the poll is partial: the target stays up\n\
         (`up 1 (partial: rooms failed)`), the failed rooms keep their last values and show in\n\
         `rtc_exporter_target_rooms_failed`.\n\n",
    );
    md.push_str("## Fault switches\n\n| fault |");
    for (v, _) in reports {
        md.push_str(&format!(" `{}` |", v.name));
    }
    md.push_str("\n|---|");
    for _ in reports {
        md.push_str("---|");
    }
    md.push('\n');
    for switch in Switch::ALL {
        md.push_str(&format!("| {} |", switch.row()));
        for (v, r) in reports {
            let cell = match r.switches.get(&switch) {
                Some(seen) => seen.cell(),
                None if v.not_applicable.iter().any(|(s, _)| *s == switch) => "n/a".into(),
                None => "not run".into(),
            };
            md.push_str(&format!(" {cell} |"));
        }
        md.push('\n');
    }
    md.push_str("\nNot applicable:\n\n");
    for (v, _) in reports {
        for (switch, why) in v.not_applicable {
            md.push_str(&format!(
                "- `{}`, `{}`: {why}.\n",
                v.name,
                switch.row().split('`').nth(1).unwrap_or("")
            ));
        }
    }
    md.push_str(
        "\n## Documented error codes\n\nEach injected as the vendor sends it (its envelope, its HTTP status), plus one code\n\
         outside the documented set, which counts as `other`.\n\n\
         | vendor | code | `code` label | outcome |\n|---|---|---|---|\n",
    );
    for (v, r) in reports {
        for (code, label, seen) in &r.codes {
            md.push_str(&format!(
                "| `{}` | `{code}` | `{label}` | {} |\n",
                v.name,
                seen.cell()
            ));
        }
    }
    md
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_vendor_conforms() {
    capture_logs();
    let runs = VENDORS
        .iter()
        .enumerate()
        .map(|(i, v)| run_vendor(v, 100 + i as u64));
    let reports: Vec<(&'static Vendor, Report)> = VENDORS
        .iter()
        .zip(futures_util::future::join_all(runs).await)
        .collect();

    let mut problems: Vec<String> = Vec::new();
    for (v, r) in &reports {
        problems.extend(r.problems.iter().cloned());
        for (api, n, busiest, qps) in &r.traffic {
            eprintln!(
                "{}: {api}: {n} requests, at most {busiest} in one second (documented {qps} QPS)",
                v.name
            );
        }
    }
    // Every level of every module, captured in process.
    let logs = String::from_utf8_lossy(&LOGS.lock().unwrap()).to_string();
    for needle in ["vendor request ok", "vendor request failed", "DEBUG"] {
        if !logs.contains(needle) {
            problems.push(format!("the captured logs lack {needle:?}: not captured?"));
        }
    }
    for (v, r) in &reports {
        for secret in &r.secrets {
            if logs.contains(secret.as_str()) {
                problems.push(format!("{}: a secret in a log line", v.name));
            }
        }
    }

    let want = matrix(&reports);
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/fault-matrix.md");
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    if have != want {
        if std::env::var_os("RTC_UPDATE_FAULT_MATRIX").is_some() {
            std::fs::write(&path, &want).unwrap();
        } else {
            problems.push(format!(
                "docs/fault-matrix.md differs from what the suite observed; paste this (or run with RTC_UPDATE_FAULT_MATRIX=1):\n\n{want}"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The real binary at `--log.level=debug`, in both formats, against every simulator: good
/// polls, then an error whose vendor message echoes the request; no secret on stderr, `/` or
/// `/metrics`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_at_debug_logs_no_secret() {
    let mut sims = Vec::new();
    for (i, v) in VENDORS.iter().enumerate() {
        let (sim, _) = (v.sim)(200 + i as u64);
        let server = SimServer::start(sim.clone(), "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        sims.push((v, sim, server));
    }
    let mut text = format!("{}targets:\n", global());
    for (v, sim, server) in &sims {
        text.push_str(&target_yaml(
            v,
            &format!("bin-{}", v.name.replace('_', "-")),
            &server.endpoint,
            sim.as_ref(),
        ));
    }
    let dir = std::env::temp_dir().join(format!("rtc-conformance-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("exporter.yaml");
    std::fs::write(&file, &text).unwrap();
    let secrets: Vec<String> = sims
        .iter()
        .flat_map(|(v, sim, _)| (v.secrets)(sim.as_ref()))
        .collect();
    assert_eq!(secrets.len(), VENDORS.len());

    for format in ["logfmt", "json"] {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let base = format!("http://127.0.0.1:{port}");
        let mut child = Command::new(env!("CARGO_BIN_EXE_rtc-exporter"))
            .arg(format!("--config.file={}", file.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=debug")
            .arg(format!("--log.format={format}"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut s = String::new();
            let mut stderr = stderr;
            let _ = std::io::Read::read_to_string(&mut stderr, &mut s);
            s
        });
        let counted = |text: &str, result: &str| -> usize {
            common::all(text, "rtc_exporter_polls_total")
                .iter()
                .filter(|s| s.label("result") == Some(result) && s.value >= 1.0)
                .count()
        };
        // Every target answered once (the Talk-cloud simulator stands at another day: its
        // rooms answer 4105, an empty success).
        common::wait_for(
            "a good poll of every target",
            Duration::from_secs(60),
            || {
                let base = base.clone();
                async move {
                    let text = common::try_scrape(&base).await?;
                    (counted(&text, "success") == VENDORS.len()).then_some(text)
                }
            },
        )
        .await;
        // Then every vendor answers an error; Talk-cloud's message echoes the request, key
        // included.
        for (v, sim, _) in &sims {
            let fault = Fault {
                code: Some(v.codes[0].0.to_string()),
                ..Fault::default()
            };
            for (api, _) in v.apis {
                (v.faults)(sim.as_ref()).set(api, fault.clone());
            }
        }
        let metrics = common::wait_for(
            "a failed poll of every target",
            Duration::from_secs(60),
            || {
                let base = base.clone();
                async move {
                    let text = common::try_scrape(&base).await?;
                    (counted(&text, "failure") == VENDORS.len()).then_some(text)
                }
            },
        )
        .await;
        let landing = reqwest::get(format!("{base}/"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let _ = child.wait();
        let logs = reader.join().unwrap();
        for (v, sim, _) in &sims {
            (v.faults)(sim.as_ref()).clear();
        }
        for needle in [
            "vendor request ok",
            "vendor request failed",
            "injected fault for request",
        ] {
            assert!(
                logs.contains(needle),
                "{format}: stderr lacks {needle:?}:\n{logs}"
            );
        }
        for secret in &secrets {
            for (place, haystack) in [("stderr", &logs), ("/metrics", &metrics), ("/", &landing)] {
                assert!(
                    !haystack.contains(secret.as_str()),
                    "{format}: a secret in {place}"
                );
            }
        }
        let mut out = std::io::stderr();
        let _ = writeln!(
            out,
            "{format}: {} bytes of debug logs, no secret",
            logs.len()
        );
    }
}
