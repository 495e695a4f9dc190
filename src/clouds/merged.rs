//! Rows merged by their identity: a row a vendor sends again (on the same page, a later page or
//! an overlapping window) is the same call or stay, folded into the one held, never added to
//! it (README, "Answers that disagree with themselves"). Every vendor pages through this.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;

/// A row with an identity.
pub trait Identity {
    /// What makes two rows the same call or stay.
    type Key: Hash + Eq + Clone;
    /// This row's identity.
    fn key(&self) -> Self::Key;
    /// Folds a later reading of the same row into this one: by default the later replaces it.
    fn merge(&mut self, later: Self)
    where
        Self: Sized,
    {
        *self = later;
    }
}

/// Rows merged by identity, in the order first seen.
#[derive(Debug)]
pub struct Merged<T: Identity> {
    /// The distinct rows.
    pub rows: Vec<T>,
    index: HashMap<T::Key, usize>,
    /// Rows that repeated one already held.
    pub repeated: usize,
    /// The first row that came again (an index into `rows`), for an anomaly's detail.
    pub first_repeat: Option<usize>,
}

impl<T: Identity> Default for Merged<T> {
    fn default() -> Self {
        Merged {
            rows: Vec::new(),
            index: HashMap::new(),
            repeated: 0,
            first_repeat: None,
        }
    }
}

impl<T: Identity> Merged<T> {
    /// Nothing held yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one row, or folds it into the row it repeats.
    pub fn add(&mut self, row: T) {
        match self.index.get(&row.key()) {
            Some(&i) => {
                self.repeated += 1;
                self.first_repeat.get_or_insert(i);
                self.rows[i].merge(row);
            }
            None => {
                self.index.insert(row.key(), self.rows.len());
                self.rows.push(row);
            }
        }
    }

    /// Adds every row.
    pub fn extend(&mut self, rows: impl IntoIterator<Item = T>) {
        for r in rows {
            self.add(r);
        }
    }

    /// Whether a row with this one's identity is held.
    pub fn knows(&self, row: &T) -> bool {
        self.index.contains_key(&row.key())
    }

    /// How many of `page` are rows not held yet (repeats within the page count once).
    pub fn fresh(&self, page: &[T]) -> usize {
        let mut seen = HashSet::new();
        page.iter()
            .map(Identity::key)
            .filter(|k| !self.index.contains_key(k) && seen.insert(k.clone()))
            .count()
    }

    /// Rows the vendor sent, repeats included.
    pub fn sent(&self) -> usize {
        self.rows.len() + self.repeated
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    struct Row(&'static str, u32);
    impl Identity for Row {
        type Key = &'static str;
        fn key(&self) -> &'static str {
            self.0
        }
    }

    #[test]
    fn a_repeated_row_replaces_its_earlier_reading_and_is_counted() {
        let mut m = Merged::new();
        m.extend([Row("a", 1), Row("b", 1), Row("a", 2), Row("a", 3)]);
        assert_eq!(m.rows, vec![Row("a", 3), Row("b", 1)]);
        assert_eq!((m.repeated, m.sent(), m.first_repeat), (2, 4, Some(0)));
        assert!(m.knows(&Row("b", 9)) && !m.knows(&Row("c", 1)));
        assert_eq!(m.fresh(&[Row("c", 1), Row("c", 2), Row("a", 1)]), 1);
    }
}
