//! Packing, padding, batching and the resumable row cursor.

use std::collections::BTreeMap;

use gradus_data::pack::{
    batches, pack_best_fit, pack_first_fit, pad_rows, Batch, CursorState, Overflow, Row, RowCursor,
    Sequence,
};
use proptest::prelude::*;

const PAD: u32 = u32::MAX;

/// Token `j` of document `d` gets the id `d * 1000 + j`, so every token is unique and names its place.
fn enc(d: usize, j: usize) -> u32 {
    (d * 1000 + j) as u32
}
fn dec(id: u32) -> (usize, usize) {
    (id as usize / 1000, id as usize % 1000)
}

fn docs_from(lens_masks: &[Vec<bool>]) -> Vec<Sequence> {
    lens_masks
        .iter()
        .enumerate()
        .map(|(d, m)| Sequence::new((0..m.len()).map(|j| enc(d, j)).collect(), m.clone()).unwrap())
        .collect()
}

fn seqs_of_lens(lens: &[usize]) -> Vec<Sequence> {
    docs_from(&lens.iter().map(|&n| vec![true; n]).collect::<Vec<_>>())
}

/// Checks every layout invariant of `rows` built from `docs` with `Overflow::Split` (or no overflow):
/// returns nothing, panics with a message on the first violation.
fn check_layout(docs: &[Sequence], rows: &[Row], seq_len: usize) {
    let mut seen: BTreeMap<(usize, usize), usize> = BTreeMap::new();
    let mut total_weight = 0.0f64;
    for (r, row) in rows.iter().enumerate() {
        // No row exceeds (or falls short of) seq_len.
        for v in [
            row.input_ids.len(),
            row.targets.len(),
            row.loss_weight.len(),
            row.position_ids.len(),
            row.segment_ids.len(),
        ] {
            assert_eq!(v, seq_len, "row {r}: vector length");
        }
        let mut prev_seg = 0u32;
        let mut in_padding = false;
        for p in 0..seq_len {
            let seg = row.segment_ids[p];
            let w = row.loss_weight[p];
            total_weight += w as f64;
            if seg == 0 {
                // Padding: only at the end of the row, pad input, no target, position 0.
                in_padding = true;
                assert_eq!(row.input_ids[p], PAD, "row {r} pos {p}: padding input");
                assert_eq!(w, 0.0, "row {r} pos {p}: weight on padding");
                assert_eq!(row.targets[p], 0, "row {r} pos {p}: target on padding");
                assert_eq!(
                    row.position_ids[p], 0,
                    "row {r} pos {p}: position on padding"
                );
                continue;
            }
            assert!(!in_padding, "row {r} pos {p}: a document after padding");
            // Segments are 1, 2, 3, ... in row order, contiguous.
            assert!(
                seg == prev_seg || seg == prev_seg + 1,
                "row {r} pos {p}: segment {seg} after {prev_seg}"
            );
            let new_segment = seg != prev_seg;
            prev_seg = seg;
            let (d, j) = dec(row.input_ids[p]);
            *seen.entry((d, j)).or_default() += 1;
            let n = docs[d].ids.len();
            // Positions restart at 0 per segment and count up by one.
            if new_segment {
                assert_eq!(
                    row.position_ids[p], 0,
                    "row {r} pos {p}: segment does not start at 0"
                );
            } else {
                assert_eq!(
                    row.position_ids[p],
                    row.position_ids[p - 1] + 1,
                    "row {r} pos {p}: position step"
                );
                assert_eq!(
                    dec(row.input_ids[p - 1]),
                    (d, j - 1),
                    "row {r} pos {p}: tokens out of order"
                );
            }
            // Target: the next token of the same document with its mask, nothing after the last token.
            if j + 1 < n {
                // (At a split cut too: the piece keeps the document's real next token.)
                assert_eq!(row.targets[p], enc(d, j + 1), "row {r} pos {p}: target");
                let m = if docs[d].loss_mask[j + 1] { 1.0 } else { 0.0 };
                assert_eq!(w, m, "row {r} pos {p}: weight");
            } else {
                assert_eq!(
                    w, 0.0,
                    "row {r} pos {p}: weight on the document's last token"
                );
                assert_eq!(
                    row.targets[p], 0,
                    "row {r} pos {p}: target after the document's last token"
                );
            }
        }
    }
    // Every token of every document exactly once.
    let expected: usize = docs.iter().map(|s| s.ids.len()).sum();
    assert_eq!(seen.len(), expected, "distinct tokens placed");
    assert!(seen.values().all(|&c| c == 1), "a token placed twice");
    // Total weight = sum of loss targets.
    let targets: usize = docs.iter().map(|s| s.num_targets()).sum();
    assert_eq!(total_weight, targets as f64, "total weight");
}

fn used(rows: &[Row]) -> Vec<usize> {
    rows.iter()
        .map(|r| r.segment_ids.iter().filter(|&&s| s != 0).count())
        .collect()
}

/// (doc, token, target, weight) of every non-padding position, sorted: the layout-independent content.
fn content(rows: &[Row]) -> Vec<(u32, u32, u32, u32)> {
    let mut v = Vec::new();
    for row in rows {
        for p in 0..row.seq_len() {
            if row.segment_ids[p] != 0 {
                v.push((
                    row.input_ids[p],
                    row.targets[p],
                    row.loss_weight[p].to_bits(),
                    row.position_ids[p],
                ));
            }
        }
    }
    v.sort();
    v
}

fn arb_docs() -> impl Strategy<Value = (Vec<Vec<bool>>, usize)> {
    (
        prop::collection::vec(prop::collection::vec(any::<bool>(), 0..40), 0..30),
        1usize..32,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn best_fit_layout_invariants((masks, seq_len) in arb_docs()) {
        let docs = docs_from(&masks);
        let rows = pack_best_fit(&docs, seq_len, PAD, Overflow::Split).unwrap();
        check_layout(&docs, &rows, seq_len);
        // Any-fit property: a row was only opened when the piece did not fit an earlier row, so no two
        // rows could be merged.
        let u = used(&rows);
        for a in 0..u.len() {
            for b in a + 1..u.len() {
                prop_assert!(u[a] + u[b] > seq_len, "rows {a} and {b} could be merged: {u:?}");
            }
        }
        // Deterministic.
        prop_assert_eq!(&rows, &pack_best_fit(&docs, seq_len, PAD, Overflow::Split).unwrap());
    }

    #[test]
    fn first_fit_and_padded_layout_invariants((masks, seq_len) in arb_docs()) {
        let docs = docs_from(&masks);
        let ff = pack_first_fit(&docs, seq_len, PAD, Overflow::Split).unwrap();
        check_layout(&docs, &ff, seq_len);
        let padded = pad_rows(&docs, seq_len, PAD, Overflow::Split).unwrap();
        check_layout(&docs, &padded, seq_len);
        // Padded: one segment per row.
        prop_assert!(padded.iter().all(|r| r.pieces.len() == 1));
    }

    #[test]
    fn packed_equals_padded((masks, seq_len) in arb_docs()) {
        let docs = docs_from(&masks);
        let packed = pack_best_fit(&docs, seq_len, PAD, Overflow::Split).unwrap();
        let padded = pad_rows(&docs, seq_len, PAD, Overflow::Split).unwrap();
        prop_assert_eq!(content(&packed), content(&padded));
        prop_assert!(packed.len() <= padded.len());
    }

    #[test]
    fn truncate_keeps_prefixes((masks, seq_len) in arb_docs()) {
        let docs = docs_from(&masks);
        let rows = pack_best_fit(&docs, seq_len, PAD, Overflow::Truncate).unwrap();
        let cut: Vec<Sequence> = docs
            .iter()
            .map(|s| {
                let n = s.len().min(seq_len);
                Sequence::new(s.ids[..n].to_vec(), s.loss_mask[..n].to_vec()).unwrap()
            })
            .collect();
        // Truncating = packing the truncated documents.
        check_layout(&cut, &rows, seq_len);
        prop_assert_eq!(&rows, &pack_best_fit(&cut, seq_len, PAD, Overflow::Error).unwrap());
    }

    #[test]
    fn error_overflow_iff_a_document_is_too_long((masks, seq_len) in arb_docs()) {
        let docs = docs_from(&masks);
        let res = pack_best_fit(&docs, seq_len, PAD, Overflow::Error);
        match docs.iter().position(|s| s.len() > seq_len) {
            None => prop_assert!(res.is_ok()),
            Some(i) => {
                let msg = res.unwrap_err().to_string();
                prop_assert!(msg.contains(&format!("document {i} has {} tokens", docs[i].len())), "{}", msg);
            }
        }
    }

    #[test]
    fn batches_and_split_preserve_rows(n_rows in 1usize..12, seq_len in 1usize..6, bs in 1usize..5, k in 1usize..5) {
        let docs = seqs_of_lens(&(0..n_rows).map(|i| 1 + i % seq_len).collect::<Vec<_>>());
        let rows = pad_rows(&docs, seq_len, PAD, Overflow::Error).unwrap();
        let bs_list = batches(&rows, bs).unwrap();
        prop_assert_eq!(bs_list.len(), n_rows.div_ceil(bs));
        let all: Vec<u32> = bs_list.iter().flat_map(|b| b.input_ids.clone()).collect();
        let want: Vec<u32> = rows.iter().flat_map(|r| r.input_ids.clone()).collect();
        prop_assert_eq!(all, want);
        for b in &bs_list {
            prop_assert_eq!(b.input_ids.len(), b.rows * b.seq_len);
            if k <= b.rows {
                let parts = b.split(k).unwrap();
                prop_assert_eq!(parts.len(), k);
                let sizes: Vec<usize> = parts.iter().map(|p| p.rows).collect();
                prop_assert!(sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1);
                prop_assert_eq!(sizes.iter().sum::<usize>(), b.rows);
                let tok: f32 = parts.iter().map(|p| p.num_target_tokens()).sum();
                prop_assert_eq!(tok, b.num_target_tokens());
                let glued: Vec<u32> = parts.iter().flat_map(|p| p.segment_ids.clone()).collect();
                prop_assert_eq!(&glued, &b.segment_ids);
            } else {
                prop_assert!(b.split(k).is_err());
            }
        }
    }
}

#[test]
fn hand_example_layout() {
    // A = [10 11 12] mask [T T F]; B = [20 21] mask [F T]; seq_len 6.
    // Best fit: A (longer) first into row 0, B after it (5 <= 6).
    // weights: A pos0 -> mask[1]=T=1, pos1 -> mask[2]=F=0, pos2 last=0; B pos0 -> mask[1]=T=1, pos1 last=0.
    let a = Sequence::new(vec![10, 11, 12], vec![true, true, false]).unwrap();
    let b = Sequence::new(vec![20, 21], vec![false, true]).unwrap();
    let rows = pack_best_fit(&[b, a], 6, 99, Overflow::Error).unwrap();
    assert_eq!(rows.len(), 1);
    let r = &rows[0];
    assert_eq!(r.input_ids, vec![10, 11, 12, 20, 21, 99]);
    assert_eq!(r.targets, vec![11, 12, 0, 21, 0, 0]);
    assert_eq!(r.loss_weight, vec![1.0, 0.0, 0.0, 1.0, 0.0, 0.0]);
    assert_eq!(r.position_ids, vec![0, 1, 2, 0, 1, 0]);
    assert_eq!(r.segment_ids, vec![1, 1, 1, 2, 2, 0]);
    assert_eq!(
        r.pieces.iter().map(|p| p.doc).collect::<Vec<_>>(),
        vec![1, 0]
    );
}

#[test]
fn split_keeps_every_target_without_overlap() {
    // doc 1..=7, seq_len 3: pieces [1 2 3] [4 5 6] [7]. The cut positions keep their next token:
    // row0 targets 2 3 4, row1 targets 5 6 7, row2 (token 7 is the last) no target. 6 = n-1 targets.
    let d = Sequence::pretrain((1..=7).collect());
    let rows = pack_best_fit(&[d], 3, 0, Overflow::Split).unwrap();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0].input_ids, vec![1, 2, 3]);
    assert_eq!(rows[0].targets, vec![2, 3, 4]);
    assert_eq!(rows[0].loss_weight, vec![1.0; 3]);
    assert_eq!(rows[1].input_ids, vec![4, 5, 6]);
    assert_eq!(rows[1].targets, vec![5, 6, 7]);
    assert_eq!(rows[1].position_ids, vec![0, 1, 2]);
    assert_eq!(rows[2].input_ids, vec![7, 0, 0]);
    assert_eq!(rows[2].targets, vec![0, 0, 0]);
    assert_eq!(rows[2].loss_weight, vec![0.0; 3]);
    assert_eq!(rows[2].segment_ids, vec![1, 0, 0]);
    let total: f32 = rows.iter().flat_map(|r| r.loss_weight.iter()).sum();
    assert_eq!(total, 6.0);
}

#[test]
fn truncate_and_error_by_hand() {
    let docs = vec![
        Sequence::pretrain(vec![5]),
        Sequence::pretrain((1..=7).collect()),
    ];
    // Truncate doc 1 to [1 2 3]: it is longest, row 0 = [1 2 3] targets [2 3 0]; doc 0 ([5]) -> row 1.
    let rows = pack_best_fit(&docs, 3, 0, Overflow::Truncate).unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].input_ids, vec![1, 2, 3]);
    assert_eq!(rows[0].targets, vec![2, 3, 0]);
    assert_eq!(rows[0].loss_weight, vec![1.0, 1.0, 0.0]);
    assert_eq!(rows[1].input_ids, vec![5, 0, 0]);
    let err = pack_best_fit(&docs, 3, 0, Overflow::Error)
        .unwrap_err()
        .to_string();
    assert!(err.contains("document 1 has 7 tokens"), "{err}");
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    let bad = Sequence {
        ids: vec![1, 2, 3],
        loss_mask: vec![true],
    };
    let err =
        pack_best_fit(&[Sequence::pretrain(vec![1]), bad], 8, 0, Overflow::Split).unwrap_err();
    assert!(err.to_string().contains("document 1"), "{err}");
    assert!(Sequence::new(vec![1, 2], vec![true]).is_err());
    assert!(pack_best_fit(&[], 0, 0, Overflow::Split).is_err());
    assert!(batches(&[], 0).is_err());
    assert!(RowCursor::new(vec![], 0, 1).is_err());
    // Empty input, empty documents: no rows.
    assert!(pack_best_fit(&[], 4, 0, Overflow::Split)
        .unwrap()
        .is_empty());
    assert!(
        pack_best_fit(&[Sequence::pretrain(vec![])], 4, 0, Overflow::Split)
            .unwrap()
            .is_empty()
    );
}

#[test]
fn best_fit_beats_first_fit_in_order_by_hand() {
    // seq_len 10, lengths [3, 3, 7, 7].
    // First fit in order: 3 -> r0 (7 free), 3 -> r0 (4 free), 7 -> r1, 7 -> r2: 3 rows.
    // Best fit decreasing: 7 -> r0 (3 free), 7 -> r1 (3 free), 3 -> r0 (full), 3 -> r1 (full): 2 rows.
    let docs = seqs_of_lens(&[3, 3, 7, 7]);
    let ff = pack_first_fit(&docs, 10, PAD, Overflow::Error).unwrap();
    let bf = pack_best_fit(&docs, 10, PAD, Overflow::Error).unwrap();
    assert_eq!(ff.len(), 3);
    assert_eq!(bf.len(), 2);
    assert_eq!(used(&bf), vec![10, 10]);
    let docs_of = |r: &Row| r.pieces.iter().map(|p| p.doc).collect::<Vec<_>>();
    assert_eq!(docs_of(&bf[0]), vec![2, 0]);
    assert_eq!(docs_of(&bf[1]), vec![3, 1]);
}

#[test]
fn batch_helpers_by_hand() {
    // 5 one-token... documents of lengths 1..=5 padded to 5: targets per doc = n - 1 = 0,1,2,3,4.
    let docs = seqs_of_lens(&[1, 2, 3, 4, 5]);
    let rows = pad_rows(&docs, 5, PAD, Overflow::Error).unwrap();
    let b = Batch::from_rows(&rows).unwrap();
    assert_eq!((b.rows, b.seq_len, b.input_ids.len()), (5, 5, 25));
    assert_eq!(b.num_target_tokens(), 10.0);
    // split(2): rows {0,1,2} and {3,4}: targets 0+1+2 = 3 and 3+4 = 7.
    let parts = b.split(2).unwrap();
    assert_eq!(parts.iter().map(|p| p.rows).collect::<Vec<_>>(), vec![3, 2]);
    assert_eq!(
        parts
            .iter()
            .map(|p| p.num_target_tokens())
            .collect::<Vec<_>>(),
        vec![3.0, 7.0]
    );
    assert!(b.split(0).is_err() && b.split(6).is_err());
    let bs = batches(&rows, 2).unwrap();
    assert_eq!(bs.iter().map(|b| b.rows).collect::<Vec<_>>(), vec![2, 2, 1]);
}

fn numbered_rows(n: usize) -> Vec<Row> {
    // Row i holds the single token i, so a batch's first column names its rows.
    let docs: Vec<Sequence> = (0..n as u32).map(|i| Sequence::pretrain(vec![i])).collect();
    pad_rows(&docs, 2, PAD, Overflow::Error).unwrap()
}

fn row_ids(b: &Batch) -> Vec<u32> {
    (0..b.rows).map(|r| b.input_ids[r * b.seq_len]).collect()
}

#[test]
fn cursor_covers_each_row_once_per_epoch_and_reshuffles() {
    // 10 rows, batch 4: batches of 4, 4, 2 per epoch.
    let mut c = RowCursor::new(numbered_rows(10), 4, 7).unwrap();
    assert_eq!(c.batches_per_epoch(), 3);
    let mut epochs = Vec::new();
    for _ in 0..3 {
        let mut seen = Vec::new();
        for want in [4, 4, 2] {
            let b = c.next_batch().unwrap();
            assert_eq!(b.rows, want);
            seen.extend(row_ids(&b));
        }
        let mut sorted = seen.clone();
        sorted.sort();
        assert_eq!(sorted, (0..10).collect::<Vec<_>>());
        epochs.push(seen);
    }
    assert_eq!(
        c.state(),
        CursorState {
            epoch: 2,
            index: 10
        }
    );
    // Each epoch's order differs (10! orders; equal by chance with probability 1/3628800).
    assert_ne!(epochs[0], epochs[1]);
    assert_ne!(epochs[1], epochs[2]);
    // Same seed, same order; no shuffle, the given order.
    let mut again = RowCursor::new(numbered_rows(10), 4, 7).unwrap();
    assert_eq!(
        row_ids(&again.next_batch().unwrap()),
        epochs[0][..4].to_vec()
    );
    let mut plain = RowCursor::new(numbered_rows(10), 4, 7)
        .unwrap()
        .with_shuffle(false);
    assert_eq!(row_ids(&plain.next_batch().unwrap()), vec![0, 1, 2, 3]);
    // drop_last: 2 full batches per epoch.
    let mut dl = RowCursor::new(numbered_rows(10), 4, 7)
        .unwrap()
        .with_drop_last(true);
    assert_eq!(dl.batches_per_epoch(), 2);
    let sizes: Vec<usize> = (0..6).map(|_| dl.next_batch().unwrap().rows).collect();
    assert_eq!(sizes, vec![4; 6]);
    assert_eq!(dl.state().epoch, 2);
    // No rows: no batches, no panic.
    assert!(RowCursor::new(vec![], 3, 1).unwrap().next_batch().is_none());
}

#[test]
fn cursor_save_and_restore_resumes_exactly() {
    for stop in [0, 1, 2, 3, 5, 8] {
        let mut a = RowCursor::new(numbered_rows(10), 3, 42).unwrap();
        for _ in 0..stop {
            a.next_batch().unwrap();
        }
        let saved = serde_json::to_string(&a.state()).unwrap();
        let rest_a: Vec<Batch> = (0..9).map(|_| a.next_batch().unwrap()).collect();
        let mut b = RowCursor::new(numbered_rows(10), 3, 42).unwrap();
        b.restore(serde_json::from_str(&saved).unwrap()).unwrap();
        let rest_b: Vec<Batch> = (0..9).map(|_| b.next_batch().unwrap()).collect();
        assert_eq!(rest_a, rest_b, "resume after {stop} batches");
    }
    let mut c = RowCursor::new(numbered_rows(4), 3, 1).unwrap();
    assert!(c.restore(CursorState { epoch: 0, index: 5 }).is_err());
}

/// Issue 10: `Overflow::Skip` leaves a document longer than `seq_len` out (the recipe counts and
/// names it); shorter documents are placed as usual.
#[test]
fn overflow_skip_leaves_long_documents_out() {
    let short = Sequence {
        ids: vec![1, 2, 3],
        loss_mask: vec![true; 3],
    };
    let long = Sequence {
        ids: (10..20).collect(),
        loss_mask: vec![true; 10],
    };
    let seqs = [short, long];
    for rows in [
        pad_rows(&seqs, 4, 0, Overflow::Skip).unwrap(),
        pack_best_fit(&seqs, 4, 0, Overflow::Skip).unwrap(),
    ] {
        assert_eq!(rows.len(), 1);
        assert!(rows[0].pieces.iter().all(|p| p.doc == 0));
        // The short document's 2 targets (tokens 1 and 2; token 0 has nothing before it).
        assert_eq!(rows[0].loss_weight.iter().sum::<f32>(), 2.0);
    }
}
