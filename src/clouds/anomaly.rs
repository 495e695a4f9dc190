//! Answers that disagree with themselves but still read (README, "Answers that disagree with themselves").
//!
//! Vendors' totals are hints whose meaning differs between APIs and doc editions: Tencent's own
//! `DescribeUserInfo` example has `Total` 1 with two rows, UCloud's `QueryURtcOnlineUsers`
//! example `TotalCount` 7 with one row. Such an answer is read (the rows the vendor sent are
//! data), and what disagreed is counted in `rtc_exporter_vendor_anomalies_total{kind}` and
//! logged at `warn` at most once an hour per target and kind. The kinds are a closed set.

use std::fmt;

/// What an answer disagreed with itself about. A closed set: the `kind` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Anomaly {
    /// A declared total (`Total`, `TotalCount`, `count`) is not the number of rows the pages
    /// held (Tencent's `DescribeUserInfo` example: `Total` 1, two rows; UCloud's example:
    /// `TotalCount` 7, one row).
    TotalMismatch,
    /// A row came twice (the same room and call, or the same user and session), on one page or
    /// across pages: merged by its identity, never summed.
    DuplicateRow,
    /// A count of users is larger than the ids listed with it (Volcengine's later
    /// `GetRoomOnlineUsers` example: `TotalUser` 6, one visible and one invisible id). Users
    /// now come from the count; the ids that are there still count as seen.
    ListShorterThanCount,
    /// A list of ids is longer than the count beside it: users now come from the ids.
    ListLongerThanCount,
    /// A call said to be running (`IsFinished: false`) already has its end time
    /// (`DestroyTime`): it is read as ended at that time.
    FinishedWithRunningFlag,
    /// Paging stopped at the hard page cap while the vendor still said there was more.
    PageCap,
    /// A listing lost rows it showed earlier (calls of the day, users still in) in
    /// [`LOST_BEFORE_BELIEVED`] polls in a row: the request fails (`malformed`) the first
    /// times, then the vendor's listing is taken as the truth (a vendor that was reset).
    LostRows,
}

/// Polls in a row whose listing lost rows before the listing is believed.
pub const LOST_BEFORE_BELIEVED: u32 = 5;

impl Anomaly {
    /// Every kind, in label order.
    pub const ALL: [Anomaly; 7] = [
        Anomaly::DuplicateRow,
        Anomaly::FinishedWithRunningFlag,
        Anomaly::ListLongerThanCount,
        Anomaly::ListShorterThanCount,
        Anomaly::LostRows,
        Anomaly::PageCap,
        Anomaly::TotalMismatch,
    ];

    /// The `kind` label value.
    pub fn label(self) -> &'static str {
        match self {
            Anomaly::TotalMismatch => "total_mismatch",
            Anomaly::DuplicateRow => "duplicate_row",
            Anomaly::ListShorterThanCount => "list_shorter_than_count",
            Anomaly::ListLongerThanCount => "list_longer_than_count",
            Anomaly::FinishedWithRunningFlag => "finished_with_running_flag",
            Anomaly::PageCap => "page_cap",
            Anomaly::LostRows => "lost_rows",
        }
    }

    /// The kind named by its label.
    pub fn from_label(label: &str) -> Option<Anomaly> {
        Anomaly::ALL.into_iter().find(|a| a.label() == label)
    }
}

impl fmt::Display for Anomaly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// One anomaly found in one answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The API whose answer it was.
    pub api: &'static str,
    /// What disagreed.
    pub kind: Anomaly,
    /// What exactly, for the log and `probe` (room ids and numbers, never a secret).
    pub detail: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_unique_sorted_and_round_trip() {
        let labels: Vec<&str> = Anomaly::ALL.iter().map(|a| a.label()).collect();
        let mut sorted = labels.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(labels, sorted);
        for a in Anomaly::ALL {
            assert_eq!(Anomaly::from_label(a.label()), Some(a));
        }
        assert_eq!(Anomaly::from_label("nope"), None);
    }
}
