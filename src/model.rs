//! The vendor-neutral model of what a poll saw: rooms, their users now, and how each room's
//! figures for the day are known (reported by the vendor, observed presence, or sessions).
//! Every vendor client ([`crate::clouds`]) reports in these terms; the ledger
//! ([`crate::ledger`]) folds them into the day and the simulators ([`crate::sim`]) compute
//! their truth in them. Nothing here knows a vendor.

use std::collections::BTreeMap;

/// Static facts of a target (`rtc_target_info`).
#[derive(Debug, Clone, Default)]
pub struct TargetInfo {
    /// The vendor's application id.
    pub app: String,
    /// The vendor region, or empty.
    pub region: String,
}

/// Device classes of `rtc_device_users`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Device {
    /// iOS and iPadOS.
    Ios,
    /// Android.
    Android,
    /// Windows.
    Windows,
    /// macOS.
    Mac,
    /// Linux.
    Linux,
    /// Browsers.
    Web,
    /// Anything else (HarmonyOS, mini-programs, unknown).
    Other,
}

impl Device {
    /// Every device class, in label order.
    pub const ALL: [Device; 7] = [
        Device::Ios,
        Device::Android,
        Device::Windows,
        Device::Mac,
        Device::Linux,
        Device::Web,
        Device::Other,
    ];
    /// The `device` label value.
    pub fn label(self) -> &'static str {
        match self {
            Device::Ios => "ios",
            Device::Android => "android",
            Device::Windows => "windows",
            Device::Mac => "mac",
            Device::Linux => "linux",
            Device::Web => "web",
            Device::Other => "other",
        }
    }
    /// Maps a vendor's OS or platform name (any case) to a device class.
    pub fn from_name(name: &str) -> Device {
        match name.trim().to_ascii_lowercase().as_str() {
            "ios" | "ipados" | "iphone" | "ipad" => Device::Ios,
            "android" => Device::Android,
            "windows" | "win" | "win32" | "win64" | "pc" => Device::Windows,
            "mac" | "macos" | "osx" | "darwin" => Device::Mac,
            "linux" => Device::Linux,
            "web" | "h5" | "browser" => Device::Web,
            _ => Device::Other,
        }
    }
}

/// Users by device class.
pub type DeviceCounts = BTreeMap<Device, u64>;

/// A user's role in a room, where the vendor tells (Talk-cloud `userroleid`; Agora's live
/// channels: broadcasters and audience).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// The teacher (presenter) of a class.
    Teacher,
    /// An assistant.
    Assistant,
    /// A student on the class's roster.
    Student,
    /// A live-stream viewer.
    Viewer,
    /// An inspector (patrol).
    Inspector,
    /// A broadcaster (host) of a live channel: publishes audio and video (Agora's live mode).
    Broadcaster,
    /// Any other role the vendor names (auditor, parent, unknown).
    Other,
}

impl Role {
    /// Every role, in label order.
    pub const ALL: [Role; 7] = [
        Role::Teacher,
        Role::Assistant,
        Role::Student,
        Role::Viewer,
        Role::Inspector,
        Role::Broadcaster,
        Role::Other,
    ];
    /// The roles of a class (every role but a live channel's `broadcaster`): what a room of
    /// sessions with roles (Talk-cloud) shows, zeros included, so that `teacher 0` is there
    /// for the class alerts and no room carries a `broadcaster 0` it can never have.
    pub const CLASS: [Role; 6] = [
        Role::Teacher,
        Role::Assistant,
        Role::Student,
        Role::Viewer,
        Role::Inspector,
        Role::Other,
    ];
    /// The `role` label value.
    pub fn label(self) -> &'static str {
        match self {
            Role::Teacher => "teacher",
            Role::Assistant => "assistant",
            Role::Student => "student",
            Role::Viewer => "viewer",
            Role::Inspector => "inspector",
            Role::Broadcaster => "broadcaster",
            Role::Other => "other",
        }
    }
}

/// Users by role.
pub type RoleCounts = BTreeMap<Role, u64>;

/// One stay of one user in a room, as a vendor with join/leave times reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionObs {
    /// User id.
    pub user: String,
    /// Join time, Unix seconds.
    pub join: i64,
    /// Leave time, Unix seconds; `None` while the user is still in.
    pub leave: Option<i64>,
    /// Device class.
    pub device: Device,
    /// Role, where the vendor tells.
    pub role: Option<Role>,
}

/// How a room's figures for the day are known.
#[derive(Debug, Clone, PartialEq)]
pub enum DayFigures {
    /// The vendor reports the day's peak and accumulated users itself.
    Reported {
        /// Peak concurrent users in [local midnight, now].
        peak: u64,
        /// Accumulated users in [local midnight, now].
        accumulated: u64,
    },
    /// The vendor lists who is in now; the ledger derives observed lower bounds.
    Present(Vec<String>),
    /// Like [`DayFigures::Present`], with the users now by role (Agora's live channels list
    /// broadcasters and audience apart).
    PresentByRole {
        /// Who is in now.
        ids: Vec<String>,
        /// Users now by role.
        roles: RoleCounts,
    },
    /// The vendor gives join and leave times; the ledger keeps the day's sessions and computes
    /// exact figures (users now = distinct users with an open session, peak by a sweep,
    /// accumulated = distinct ids).
    ///
    /// A delta: `sessions` holds **every** session of the room that overlaps [`since`, now], so
    /// later polls need not fetch the whole day again. The ledger merges them into what it has
    /// (same user and join time: the newer report wins). A session it holds open that started
    /// before `since` and is not in the report has ended; it is closed at the last time it was
    /// seen open.
    Sessions {
        /// Start of the time span this report covers completely.
        since: i64,
        /// The sessions overlapping [`since`, now].
        sessions: Vec<SessionObs>,
    },
}

/// One room as a vendor saw it in one poll.
#[derive(Debug, Clone, PartialEq)]
pub struct RoomObservation {
    /// Room id.
    pub room: String,
    /// In progress now.
    pub active: bool,
    /// Users now (visible + invisible; bots excluded where the vendor tells them apart). For
    /// [`DayFigures::Sessions`] the ledger counts the open sessions instead.
    pub users: u64,
    /// Invisible users now, where the vendor tells.
    pub invisible: Option<u64>,
    /// Peak and accumulated, who is present, or the sessions.
    pub day: DayFigures,
}

/// What one poll of one target saw: vendor-neutral.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observation {
    /// Every room the vendor listed (or, in a partial poll, every room refreshed).
    pub rooms: Vec<RoomObservation>,
    /// Users by device, where the vendor tells (session vendors: derived by the ledger).
    pub devices: Option<DeviceCounts>,
    /// Watched users: (user id, online).
    pub watched: Vec<(String, bool)>,
    /// Rooms whose refresh failed in this poll: they keep their last values.
    pub failed: Vec<String>,
    /// The first of those failures, for the target's last error.
    pub first_error: Option<String>,
}

impl Observation {
    /// Adds what `other` saw (rooms, failures; devices and watched users where it has them).
    pub fn merge(&mut self, other: Observation) {
        self.rooms.extend(other.rooms);
        self.failed.extend(other.failed);
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        if other.devices.is_some() {
            self.devices = other.devices;
        }
        if !other.watched.is_empty() {
            self.watched = other.watched;
        }
    }
}
