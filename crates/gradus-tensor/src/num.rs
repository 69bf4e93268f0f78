//! Small numeric helpers over plain numbers that several crates share.

/// The arithmetic mean of `xs`, or None when there are none: the caller says what an empty
/// input means (0 for a metric of an empty batch, NaN for a statistic that does not exist).
pub fn mean(xs: impl IntoIterator<Item = f64>) -> Option<f64> {
    let (s, n) = xs
        .into_iter()
        .fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    (n > 0).then(|| s / n as f64)
}

#[cfg(test)]
mod tests {
    #[test]
    fn mean_by_hand() {
        assert_eq!(super::mean([1.0, 2.0, 6.0]), Some(3.0));
        assert_eq!(super::mean(std::iter::empty()), None);
    }
}
