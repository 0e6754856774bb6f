//! [`Stat`]: median, min and max of repeated measurements.

use serde::Serialize;

/// Summary of repeated measurements of one quantity (ns/block, requests/s, ...).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Stat {
    /// Median (mean of the two middle values for an even count).
    pub median: f64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// Number of values.
    pub reps: usize,
}

impl Stat {
    /// Summarises `values`.
    ///
    /// # Panics
    ///
    /// When `values` is empty or holds a NaN.
    ///
    /// # Examples
    ///
    /// ```
    /// use kvtier_bench::Stat;
    ///
    /// let s = Stat::from_values(vec![3.0, 1.0, 2.0, 10.0]);
    /// assert_eq!((s.median, s.min, s.max, s.reps), (2.5, 1.0, 10.0, 4));
    /// ```
    pub fn from_values(mut values: Vec<f64>) -> Self {
        assert!(!values.is_empty(), "Stat of no values");
        values.sort_by(|a, b| a.partial_cmp(b).expect("no NaN measurements"));
        let n = values.len();
        let median = if n % 2 == 1 {
            values[n / 2]
        } else {
            (values[n / 2 - 1] + values[n / 2]) / 2.0
        };
        Self {
            median,
            min: values[0],
            max: values[n - 1],
            reps: n,
        }
    }

    /// Half the min..max spread as a percentage of the median.
    pub fn spread_pct(&self) -> f64 {
        if self.median == 0.0 {
            0.0
        } else {
            (self.max - self.min) / 2.0 / self.median * 100.0
        }
    }
}
