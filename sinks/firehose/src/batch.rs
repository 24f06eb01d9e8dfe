//! Splitting records into `PutRecordBatch` calls within Firehose's limits (pure: no I/O).

/// Records per `PutRecordBatch` call.
pub const MAX_RECORDS_PER_BATCH: usize = 500;
/// Bytes per `PutRecordBatch` call (the sum of the records' data).
pub const MAX_BYTES_PER_BATCH: usize = 4 * 1024 * 1024;
/// Bytes per record, before base64 encoding.
pub const MAX_RECORD_BYTES: usize = 1000 * 1024;

/// Which records go in which call.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Indices of the records of each call, in order: at most [`MAX_RECORDS_PER_BATCH`]
    /// records and [`MAX_BYTES_PER_BATCH`] bytes each.
    pub batches: Vec<Vec<usize>>,
    /// Indices of records over [`MAX_RECORD_BYTES`]: Firehose would refuse the whole call.
    pub oversized: Vec<usize>,
}

/// Packs records of these sizes into as few calls as the limits allow, keeping their order.
/// An empty record is sent like any other (Firehose accepts it).
pub fn plan(sizes: impl IntoIterator<Item = usize>) -> Plan {
    let mut out = Plan::default();
    let mut current: Vec<usize> = Vec::new();
    let mut bytes = 0usize;
    for (i, size) in sizes.into_iter().enumerate() {
        if size > MAX_RECORD_BYTES {
            out.oversized.push(i);
            continue;
        }
        if current.len() == MAX_RECORDS_PER_BATCH || bytes + size > MAX_BYTES_PER_BATCH {
            out.batches.push(std::mem::take(&mut current));
            bytes = 0;
        }
        current.push(i);
        bytes += size;
    }
    if !current.is_empty() {
        out.batches.push(current);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(sizes: &[usize], p: &Plan) {
        let mut seen: Vec<usize> = p.batches.iter().flatten().copied().collect();
        assert!(seen.windows(2).all(|w| w[0] < w[1]), "order kept");
        seen.extend(&p.oversized);
        seen.sort_unstable();
        assert_eq!(
            seen,
            (0..sizes.len()).collect::<Vec<_>>(),
            "each record once"
        );
        for b in &p.batches {
            assert!(!b.is_empty());
            assert!(b.len() <= MAX_RECORDS_PER_BATCH);
            assert!(b.iter().map(|&i| sizes[i]).sum::<usize>() <= MAX_BYTES_PER_BATCH);
        }
    }

    #[test]
    fn five_hundred_records_per_call() {
        for (n, calls) in [(1, 1), (499, 1), (500, 1), (501, 2), (1000, 2), (1001, 3)] {
            let sizes = vec![100; n];
            let p = plan(sizes.iter().copied());
            check(&sizes, &p);
            assert_eq!(p.batches.len(), calls, "{n} records");
            assert_eq!(p.batches[0].len(), n.min(MAX_RECORDS_PER_BATCH));
        }
    }

    #[test]
    fn four_mebibytes_per_call() {
        // Exactly 4 MiB fits in one call; one byte more needs a second.
        let quarter = MAX_BYTES_PER_BATCH / 8;
        let sizes = vec![quarter; 8];
        let p = plan(sizes.iter().copied());
        check(&sizes, &p);
        assert_eq!(p.batches, vec![(0..8).collect::<Vec<_>>()]);
        let mut sizes = vec![quarter; 8];
        sizes[7] += 1;
        let p = plan(sizes.iter().copied());
        check(&sizes, &p);
        assert_eq!(p.batches, vec![(0..7).collect::<Vec<_>>(), vec![7]]);
        // Records of the largest size: four per call (4 × 1,000 KiB ≤ 4 MiB < 5 × 1,000 KiB).
        let sizes = vec![MAX_RECORD_BYTES; 9];
        let p = plan(sizes.iter().copied());
        check(&sizes, &p);
        assert_eq!(
            p.batches.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![4, 4, 1]
        );
    }

    #[test]
    fn records_over_1000_kib_are_set_aside_and_the_rest_keep_their_order() {
        let sizes = vec![
            10,
            MAX_RECORD_BYTES,
            MAX_RECORD_BYTES + 1,
            20,
            usize::MAX / 4,
            0,
        ];
        let p = plan(sizes.iter().copied());
        check(&sizes, &p);
        assert_eq!(p.oversized, vec![2, 4]);
        assert_eq!(p.batches, vec![vec![0, 1, 3, 5]]);
        assert_eq!(plan([]), Plan::default());
    }
}
