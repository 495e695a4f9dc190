//! The classes the Talk-cloud simulator serves, laid out around a time `t0` from a seed (see
//! the [`super`] docs for what each class holds).

const MINUTE: i64 = 60;

/// One stay of one user: one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stay {
    /// `userid`.
    pub user: String,
    /// `username`.
    pub name: String,
    /// Enter time, Unix seconds.
    pub join: i64,
    /// Leave time (exclusive), Unix seconds.
    pub leave: i64,
    /// `terminal`: 0 windows, 1 mac, 2 ios, 3 android, 4 linux, 5 unknown.
    pub terminal: u8,
    /// `terminal_details`: 1 client, 2 WeChat, 3 Safari, 4 Chrome, 5 other.
    pub details: u8,
    /// `userroleid`: 0 teacher, 1 assistant, 2 student, 3 viewer, 4 inspector, 6 auditor,
    /// 27 parent.
    pub role: u8,
    /// On stage (`uptablelist`) rather than a live viewer (`logininfo`).
    pub on_stage: bool,
}

impl Stay {
    /// In the room at `t`.
    pub fn present(&self, t: i64) -> bool {
        self.join <= t && t < self.leave
    }
}

/// One room and everyone's stays in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassRoom {
    /// `serial`.
    pub serial: String,
    /// `thirdroomid`.
    pub third: String,
    /// Every stay, in enter-time order.
    pub stays: Vec<Stay>,
}

/// Viewer terminals, weighted: android, ios, windows, mac, linux, unknown.
const TERMINALS: [(u8, u32); 6] = [(3, 35), (2, 30), (0, 15), (1, 8), (4, 2), (5, 10)];

fn terminal(rng: &mut fastrand::Rng) -> u8 {
    let total: u32 = TERMINALS.iter().map(|t| t.1).sum();
    let mut pick = rng.u32(..total);
    for (t, w) in TERMINALS {
        if pick < w {
            return t;
        }
        pick -= w;
    }
    5
}

/// Builds the stays of one person.
struct Person<'a> {
    stays: &'a mut Vec<Stay>,
    user: String,
    terminal: u8,
    role: u8,
    on_stage: bool,
}

impl Person<'_> {
    fn stay(&mut self, join: i64, leave: i64) {
        self.stays.push(Stay {
            user: self.user.clone(),
            name: format!("user {}", self.user),
            join,
            leave,
            terminal: self.terminal,
            details: if self.terminal <= 1 { 1 } else { 4 },
            role: self.role,
            on_stage: self.on_stage,
        });
    }
}

fn person<'a>(
    stays: &'a mut Vec<Stay>,
    user: impl Into<String>,
    terminal: u8,
    role: u8,
    on_stage: bool,
) -> Person<'a> {
    Person {
        stays,
        user: user.into(),
        terminal,
        role,
        on_stage,
    }
}

/// Viewers joining within [start − 10 min, start + `spread`], staying a while, some leaving and
/// rejoining up to twice, all gone at `end`.
fn viewers(
    rng: &mut fastrand::Rng,
    stays: &mut Vec<Stay>,
    first_id: u64,
    n: usize,
    (start, end): (i64, i64),
    spread: i64,
) {
    for i in 0..n {
        let role = if rng.u32(..10) == 0 { 2 } else { 3 };
        let mut p = person(
            stays,
            (first_id + i as u64).to_string(),
            terminal(rng),
            role,
            false,
        );
        let mut join = start - 10 * MINUTE + rng.i64(0..spread + 10 * MINUTE);
        for round in 0..3 {
            let leave = (join + rng.i64(2 * MINUTE..90 * MINUTE)).min(end);
            if leave <= join {
                break;
            }
            p.stay(join, leave);
            if round == 2 || rng.u32(..100) >= 55 {
                break;
            }
            join = leave + rng.i64(MINUTE..15 * MINUTE);
        }
    }
}

/// The four classes around `t0` (see the module docs).
pub fn classes(rng: &mut fastrand::Rng, t0: i64) -> Vec<ClassRoom> {
    let mut rooms = Vec::new();

    // The big class.
    let (start, end) = (t0 - 100 * MINUTE, t0 + 50 * MINUTE);
    let mut s = Vec::new();
    person(&mut s, "t-1001", 0, 0, true).stay(start - 5 * MINUTE, end);
    let mut a = person(&mut s, "a-1001", 1, 1, true);
    a.stay(start, t0 - 30 * MINUTE);
    a.stay(t0 - 25 * MINUTE, end);
    person(&mut s, "a-1002", 0, 1, true).stay(start, end);
    person(&mut s, "s-1001", 2, 2, true).stay(start + 20 * MINUTE, start + 35 * MINUTE);
    person(&mut s, "s-1002", 3, 2, true).stay(t0 - 5 * MINUTE, t0 + 8 * MINUTE);
    person(&mut s, "i-1001", 5, 4, false).stay(start + 30 * MINUTE, start + 40 * MINUTE);
    person(&mut s, "au-1001", 0, 6, false).stay(start + 5 * MINUTE, end);
    person(&mut s, "p-1001", 2, 27, false).stay(t0 - 40 * MINUTE, end);
    viewers(rng, &mut s, 20_000_000, 450, (start, end), 70 * MINUTE);
    // One viewer on a phone and a laptop at once.
    let mut two = person(&mut s, "20009999", 3, 3, false);
    two.stay(t0 - 50 * MINUTE, end);
    two.terminal = 0;
    two.stay(t0 - 45 * MINUTE, t0 - 20 * MINUTE);
    // Viewers in at t0 who leave within ten minutes after it.
    for (n, (join, leave)) in [
        (t0 - 70 * MINUTE, t0 + 2 * MINUTE),
        (t0 - 30 * MINUTE, t0 + 4 * MINUTE),
        (t0 - MINUTE, t0 + 6 * MINUTE),
    ]
    .into_iter()
    .enumerate()
    {
        person(&mut s, format!("2001000{n}"), 2, 3, false).stay(join, leave);
    }
    // Also watching the early class.
    person(&mut s, "30000001", 3, 3, false).stay(t0 - 20 * MINUTE, end);
    rooms.push(("7100000001", "class-big", s));

    // The class whose teacher leaves early.
    let (start, end) = (t0 - 60 * MINUTE, t0 + 30 * MINUTE);
    let mut s = Vec::new();
    person(&mut s, "t-2001", 1, 0, true).stay(start, t0 - 15 * MINUTE);
    person(&mut s, "a-2001", 0, 1, true).stay(start, end);
    viewers(rng, &mut s, 21_000_000, 40, (start, end), 30 * MINUTE);
    person(&mut s, "30000001", 2, 3, false).stay(t0 - 10 * MINUTE, end);
    rooms.push(("7100000002", "class-early", s));

    // A class later today.
    let (start, end) = (t0 + 120 * MINUTE, t0 + 180 * MINUTE);
    let mut s = Vec::new();
    person(&mut s, "t-3001", 0, 0, true).stay(start, end);
    viewers(
        rng,
        &mut s,
        22_000_000,
        20,
        (start + 10 * MINUTE, end),
        20 * MINUTE,
    );
    rooms.push(("7100000003", "class-later", s));

    // A class over before t0.
    let (start, end) = (t0 - 300 * MINUTE, t0 - 240 * MINUTE);
    let mut s = Vec::new();
    person(&mut s, "t-4001", 0, 0, true).stay(start, end);
    viewers(
        rng,
        &mut s,
        23_000_000,
        30,
        (start + 10 * MINUTE, end),
        20 * MINUTE,
    );
    rooms.push(("7100000004", "open-day", s));

    rooms
        .into_iter()
        .map(|(serial, third, mut stays)| {
            stays.sort_by(|a, b| (a.join, &a.user).cmp(&(b.join, &b.user)));
            ClassRoom {
                serial: serial.to_string(),
                third: third.to_string(),
                stays,
            }
        })
        .collect()
}
