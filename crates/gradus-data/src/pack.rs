//! Packing tokenized documents into fixed-length rows, and batching those rows.
//!
//! A document of `n` tokens occupies `n` positions of a row. Position `j` of the document has input
//! `ids[j]` and target `ids[j + 1]`, counted with weight `loss_mask[j + 1]`; the last position has no
//! target (weight 0). Targets therefore never cross a document boundary, and with per-document
//! `position_ids` (restarting at 0) and `segment_ids` (1, 2, 3, … per document in a row, 0 on padding)
//! a model can build a block-diagonal causal mask, so a packed row computes exactly what the same
//! documents padded one per row would ("packed = padded").
//!
//! Layout of every per-position vector (a [`Row`] field, or a [`Batch`] field flattened row-major):
//! ```text
//! document A = [a0 a1 a2], document B = [b0 b1], seq_len 6, pad P
//! input_ids    a0 a1 a2 b0 b1 P
//! targets      a1 a2 0  b1 0  0
//! loss_weight  m1 m2 0  m1 0  0      (m = the document's loss_mask)
//! position_ids 0  1  2  0  1  0
//! segment_ids  1  1  1  2  2  0
//! ```
//!
//! Documents longer than `seq_len` follow [`Overflow`] (the recipes' `data.overflow` setting).
//! `Overflow::Skip` leaves them out (the caller counts and names them). `Overflow::Split` cuts a document into
//! consecutive pieces of `seq_len` tokens **without overlap**: the last position of a piece keeps the
//! document's real next token (the first token of the following piece) as its target. Every token is an
//! input exactly once and every target of the document is counted exactly once, which is what a 1-token
//! overlap would achieve at the cost of one duplicated input per cut. Each piece is its own segment with
//! positions restarting at 0 (it is placed in a row on its own, without the earlier context).
//!
//! Row assignment: [`pack_best_fit`] (best-fit decreasing, deterministic), [`pack_first_fit`]
//! (first fit in document order, for comparison) and [`pad_rows`] (one document per row).
//! [`RowCursor`] walks rows in a seeded per-epoch order with a saveable `(epoch, index)` position.

use std::collections::BTreeSet;

use gradus_tensor::rng::Rng;
use gradus_tensor::{Error, Result};
use serde::{Deserialize, Serialize};

/// One tokenized document. `loss_mask[i]` says whether token `i` is a training *target* (predicted
/// from tokens `< i`). For pretraining all true; for SFT true only on completion/assistant tokens.
/// `loss_mask[0]` is never used: the first token has nothing before it in the document.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sequence {
    pub ids: Vec<u32>,
    pub loss_mask: Vec<bool>,
}

impl Sequence {
    /// A sequence whose mask has the same length as `ids`, checked.
    pub fn new(ids: Vec<u32>, loss_mask: Vec<bool>) -> Result<Self> {
        if ids.len() != loss_mask.len() {
            return Err(Error::msg(format!(
                "sequence has {} ids but a loss mask of {} entries",
                ids.len(),
                loss_mask.len()
            )));
        }
        Ok(Self { ids, loss_mask })
    }

    /// A pretraining sequence: every token is a target.
    pub fn pretrain(ids: Vec<u32>) -> Self {
        let loss_mask = vec![true; ids.len()];
        Self { ids, loss_mask }
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// How many targets this document contributes: positions `i >= 1` with `loss_mask[i]`.
    pub fn num_targets(&self) -> usize {
        self.loss_mask.iter().skip(1).filter(|&&m| m).count()
    }
}

/// What to do with a document longer than `seq_len` (`data.overflow` in recipe configs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Overflow {
    /// Leave the document out; the caller counts it and names it (`file:line`).
    Skip,
    /// Cut into consecutive pieces of at most `seq_len` tokens; no input or target is lost (see the
    /// module docs).
    Split,
    /// Keep the first `seq_len` tokens, as if the document ended there (its last kept position has no
    /// target).
    Truncate,
    /// Refuse, naming the document's index and length.
    Error,
}

/// A contiguous piece of a document placed in a row.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Piece {
    /// Index of the document in the input slice.
    pub doc: usize,
    /// First token of the document in this piece.
    pub start: usize,
    /// Number of tokens (positions) of the piece.
    pub len: usize,
    /// Position in the row where the piece begins.
    pub offset: usize,
    /// Whether the piece's last position predicts the document's next token (a `Split` cut).
    pub continues: bool,
}

/// One row of `seq_len` positions. All vectors have length `seq_len`; see the module docs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Row {
    pub input_ids: Vec<u32>,
    pub targets: Vec<u32>,
    pub loss_weight: Vec<f32>,
    pub position_ids: Vec<u32>,
    pub segment_ids: Vec<u32>,
    /// Where each document piece sits, in row order (segment `k + 1` is `pieces[k]`).
    pub pieces: Vec<Piece>,
}

impl Row {
    pub fn seq_len(&self) -> usize {
        self.input_ids.len()
    }

    /// Whether all per-position vectors have the same length.
    pub fn is_consistent(&self) -> bool {
        let t = self.input_ids.len();
        [
            self.targets.len(),
            self.loss_weight.len(),
            self.position_ids.len(),
            self.segment_ids.len(),
        ]
        .iter()
        .all(|&l| l == t)
    }

    /// Number of non-padding positions.
    pub fn used(&self) -> usize {
        self.pieces.iter().map(|p| p.len).sum()
    }
}

/// A piece not yet placed: `(doc, start, len, continues)`.
#[derive(Clone, Copy, Debug)]
struct Item {
    doc: usize,
    start: usize,
    len: usize,
    continues: bool,
}

fn check_seq_len(seq_len: usize) -> Result<()> {
    if seq_len == 0 {
        return Err(Error::config("seq_len", "must be at least 1"));
    }
    if seq_len > u32::MAX as usize {
        return Err(Error::config(
            "seq_len",
            format!("{seq_len} does not fit position ids (u32)"),
        ));
    }
    Ok(())
}

/// Validate the documents and cut them into items of at most `seq_len` tokens, in document order.
/// Empty documents produce no item.
fn items(seqs: &[Sequence], seq_len: usize, overflow: Overflow) -> Result<Vec<Item>> {
    check_seq_len(seq_len)?;
    let mut out = Vec::with_capacity(seqs.len());
    for (doc, s) in seqs.iter().enumerate() {
        let n = s.ids.len();
        if s.loss_mask.len() != n {
            return Err(Error::msg(format!(
                "document {doc}: {n} ids but a loss mask of {} entries",
                s.loss_mask.len()
            )));
        }
        if n <= seq_len {
            if n > 0 {
                out.push(Item {
                    doc,
                    start: 0,
                    len: n,
                    continues: false,
                });
            }
            continue;
        }
        match overflow {
            Overflow::Skip => {}
            Overflow::Error => {
                return Err(Error::msg(format!(
                "document {doc} has {n} tokens, longer than seq_len {seq_len} (overflow = error)"
            )))
            }
            Overflow::Truncate => out.push(Item {
                doc,
                start: 0,
                len: seq_len,
                continues: false,
            }),
            Overflow::Split => {
                let mut start = 0;
                while start < n {
                    let len = seq_len.min(n - start);
                    out.push(Item {
                        doc,
                        start,
                        len,
                        continues: start + len < n,
                    });
                    start += len;
                }
            }
        }
    }
    Ok(out)
}

/// Best-fit decreasing: items by length descending (stable, so ties keep document order), each into
/// the row with the least free space that still fits it (ties: the earliest row), else a new row.
fn assign_best_fit(mut items: Vec<Item>, seq_len: usize) -> Vec<Vec<Item>> {
    items.sort_by_key(|it| std::cmp::Reverse(it.len)); // stable: ties keep document order
    let mut rows: Vec<Vec<Item>> = Vec::new();
    // (free space, row index) of every row that still has space.
    let mut free: BTreeSet<(usize, usize)> = BTreeSet::new();
    for it in items {
        match free.range((it.len, 0)..).next().copied() {
            Some((space, r)) => {
                free.remove(&(space, r));
                rows[r].push(it);
                if space > it.len {
                    free.insert((space - it.len, r));
                }
            }
            None => {
                let r = rows.len();
                rows.push(vec![it]);
                if seq_len > it.len {
                    free.insert((seq_len - it.len, r));
                }
            }
        }
    }
    rows
}

/// First fit in document order: each item into the earliest row where it fits.
fn assign_first_fit(items: Vec<Item>, seq_len: usize) -> Vec<Vec<Item>> {
    let mut rows: Vec<(usize, Vec<Item>)> = Vec::new();
    for it in items {
        match rows.iter_mut().find(|(used, _)| used + it.len <= seq_len) {
            Some((used, row)) => {
                *used += it.len;
                row.push(it);
            }
            None => rows.push((it.len, vec![it])),
        }
    }
    rows.into_iter().map(|(_, r)| r).collect()
}

fn materialize(seqs: &[Sequence], plan: Vec<Vec<Item>>, seq_len: usize, pad_id: u32) -> Vec<Row> {
    plan.into_iter()
        .map(|items| {
            let mut row = Row {
                input_ids: vec![pad_id; seq_len],
                targets: vec![0; seq_len],
                loss_weight: vec![0.0; seq_len],
                position_ids: vec![0; seq_len],
                segment_ids: vec![0; seq_len],
                pieces: Vec::with_capacity(items.len()),
            };
            let mut offset = 0;
            for (k, it) in items.into_iter().enumerate() {
                let s = &seqs[it.doc];
                // The piece predicts up to token `end` of the document (exclusive).
                let end = if it.continues {
                    it.start + it.len + 1
                } else {
                    it.start + it.len
                };
                for j in 0..it.len {
                    let p = offset + j;
                    let t = it.start + j;
                    row.input_ids[p] = s.ids[t];
                    row.position_ids[p] = j as u32;
                    row.segment_ids[p] = k as u32 + 1;
                    if t + 1 < end {
                        row.targets[p] = s.ids[t + 1];
                        row.loss_weight[p] = if s.loss_mask[t + 1] { 1.0 } else { 0.0 };
                    }
                }
                row.pieces.push(Piece {
                    doc: it.doc,
                    start: it.start,
                    len: it.len,
                    offset,
                    continues: it.continues,
                });
                offset += it.len;
            }
            row
        })
        .collect()
}

/// Pack documents into rows of `seq_len` by best-fit decreasing bin packing (deterministic).
pub fn pack_best_fit(
    seqs: &[Sequence],
    seq_len: usize,
    pad_id: u32,
    overflow: Overflow,
) -> Result<Vec<Row>> {
    let items = items(seqs, seq_len, overflow)?;
    Ok(materialize(
        seqs,
        assign_best_fit(items, seq_len),
        seq_len,
        pad_id,
    ))
}

/// Pack documents into rows by first fit in document order (no sorting): the baseline that
/// [`pack_best_fit`] improves on.
pub fn pack_first_fit(
    seqs: &[Sequence],
    seq_len: usize,
    pad_id: u32,
    overflow: Overflow,
) -> Result<Vec<Row>> {
    let items = items(seqs, seq_len, overflow)?;
    Ok(materialize(
        seqs,
        assign_first_fit(items, seq_len),
        seq_len,
        pad_id,
    ))
}

/// The "padded" layout: one document (or one `Split` piece) per row, right padded with `pad_id`.
/// Rows are in document order.
pub fn pad_rows(
    seqs: &[Sequence],
    seq_len: usize,
    pad_id: u32,
    overflow: Overflow,
) -> Result<Vec<Row>> {
    let items = items(seqs, seq_len, overflow)?;
    let plan = items.into_iter().map(|it| vec![it]).collect();
    Ok(materialize(seqs, plan, seq_len, pad_id))
}

/// A batch of `rows` rows of `seq_len` positions; every vector is row-major with `rows * seq_len`
/// entries (shape B×T). Field meanings as in [`Row`] and the module docs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Batch {
    pub rows: usize,
    pub seq_len: usize,
    pub input_ids: Vec<u32>,
    pub targets: Vec<u32>,
    pub loss_weight: Vec<f32>,
    pub position_ids: Vec<u32>,
    pub segment_ids: Vec<u32>,
}

impl Batch {
    /// Stack rows (all of the same `seq_len`, at least one) into a batch.
    pub fn from_rows<'a>(rows: impl IntoIterator<Item = &'a Row>) -> Result<Batch> {
        let mut b = Batch {
            rows: 0,
            seq_len: 0,
            input_ids: Vec::new(),
            targets: Vec::new(),
            loss_weight: Vec::new(),
            position_ids: Vec::new(),
            segment_ids: Vec::new(),
        };
        for r in rows {
            let t = r.seq_len();
            if !r.is_consistent() {
                return Err(Error::msg(format!(
                    "row {} has vectors of different lengths",
                    b.rows
                )));
            }
            if b.rows == 0 {
                b.seq_len = t;
            } else if t != b.seq_len {
                return Err(Error::msg(format!(
                    "row {} has seq_len {t}, earlier rows have {}",
                    b.rows, b.seq_len
                )));
            }
            b.input_ids.extend_from_slice(&r.input_ids);
            b.targets.extend_from_slice(&r.targets);
            b.loss_weight.extend_from_slice(&r.loss_weight);
            b.position_ids.extend_from_slice(&r.position_ids);
            b.segment_ids.extend_from_slice(&r.segment_ids);
            b.rows += 1;
        }
        if b.rows == 0 {
            return Err(Error::msg("a batch needs at least one row"));
        }
        Ok(b)
    }

    /// Sum of the loss weights: the number of target tokens this batch contributes to the loss.
    pub fn num_target_tokens(&self) -> f32 {
        self.loss_weight.iter().map(|&w| w as f64).sum::<f64>() as f32
    }

    /// Rows `lo..hi` as a batch (`lo < hi <= rows`).
    pub fn slice_rows(&self, lo: usize, hi: usize) -> Result<Batch> {
        if lo >= hi || hi > self.rows {
            return Err(Error::msg(format!(
                "row range {lo}..{hi} is empty or outside 0..{}",
                self.rows
            )));
        }
        let (a, z) = (lo * self.seq_len, hi * self.seq_len);
        Ok(Batch {
            rows: hi - lo,
            seq_len: self.seq_len,
            input_ids: self.input_ids[a..z].to_vec(),
            targets: self.targets[a..z].to_vec(),
            loss_weight: self.loss_weight[a..z].to_vec(),
            position_ids: self.position_ids[a..z].to_vec(),
            segment_ids: self.segment_ids[a..z].to_vec(),
        })
    }

    /// Split into `k` micro-batches of consecutive rows for gradient accumulation. Sizes differ by at
    /// most one (the first `rows % k` get one more row). Errors if `k == 0` or `k > rows`.
    ///
    /// Normalise the loss by the *whole* batch's [`Batch::num_target_tokens`], not each micro-batch's,
    /// so that accumulating the micro-batches equals the full batch.
    pub fn split(&self, k: usize) -> Result<Vec<Batch>> {
        if k == 0 || k > self.rows {
            return Err(Error::msg(format!(
                "cannot split a batch of {} rows into {k} micro-batches",
                self.rows
            )));
        }
        let (base, extra) = (self.rows / k, self.rows % k);
        let mut out = Vec::with_capacity(k);
        let mut lo = 0;
        for i in 0..k {
            let hi = lo + base + usize::from(i < extra);
            out.push(self.slice_rows(lo, hi)?);
            lo = hi;
        }
        Ok(out)
    }
}

/// Consecutive batches of `batch_size` rows in the given order; the last one may be smaller.
pub fn batches(rows: &[Row], batch_size: usize) -> Result<Vec<Batch>> {
    if batch_size == 0 {
        return Err(Error::config("batch_size", "must be at least 1"));
    }
    rows.chunks(batch_size).map(Batch::from_rows).collect()
}

/// The saveable position of a [`RowCursor`]: the epoch and the number of rows of that epoch's order
/// already consumed. Goes into `trainer_state.json`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CursorState {
    pub epoch: u64,
    pub index: usize,
}

/// An endless walk over the indices `0..n`, epoch after epoch, in batches: the bookkeeping of
/// [`RowCursor`], also used directly for datasets that are not packed rows (preference pairs).
///
/// Each epoch's order is a shuffle drawn from `Rng::derive(seed, "gradus-data/rows/epoch-<e>")`,
/// so it depends only on `(seed, epoch)`: restoring a [`CursorState`] resumes exactly. Batches never
/// straddle epochs; the last batch of an epoch is smaller unless `drop_last` is set.
#[derive(Clone, Debug)]
pub struct IndexCursor {
    n: usize,
    batch_size: usize,
    seed: u64,
    shuffle: bool,
    drop_last: bool,
    state: CursorState,
    /// The order of `state.epoch`.
    order: Vec<usize>,
}

impl IndexCursor {
    /// A shuffling cursor at epoch 0, index 0, keeping the last partial batch of each epoch.
    pub fn new(n: usize, batch_size: usize, seed: u64) -> Result<Self> {
        if batch_size == 0 {
            return Err(Error::config("batch_size", "must be at least 1"));
        }
        let mut c = Self {
            n,
            batch_size,
            seed,
            shuffle: true,
            drop_last: false,
            state: CursorState::default(),
            order: Vec::new(),
        };
        c.order = c.epoch_order(0);
        Ok(c)
    }

    /// Turn the per-epoch shuffle off (indices in order every epoch) or on.
    pub fn with_shuffle(mut self, shuffle: bool) -> Self {
        self.shuffle = shuffle;
        self.order = self.epoch_order(self.state.epoch);
        self
    }

    /// Drop the last batch of an epoch when it has fewer than `batch_size` items.
    pub fn with_drop_last(mut self, drop_last: bool) -> Self {
        self.drop_last = drop_last;
        self
    }

    pub fn len(&self) -> usize {
        self.n
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// Batches in one epoch.
    pub fn batches_per_epoch(&self) -> usize {
        if self.drop_last {
            self.n / self.batch_size
        } else {
            self.n.div_ceil(self.batch_size)
        }
    }

    /// The order of `epoch`.
    pub fn epoch_order(&self, epoch: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.n).collect();
        if self.shuffle {
            let mut rng = Rng::derive(self.seed, &format!("gradus-data/rows/epoch-{epoch}"));
            rng.shuffle(&mut order);
        }
        order
    }

    pub fn state(&self) -> CursorState {
        self.state
    }

    /// Jump to a saved position. Errors if `index` is beyond the number of items.
    pub fn restore(&mut self, state: CursorState) -> Result<()> {
        if state.index > self.n {
            return Err(Error::msg(format!(
                "cursor index {} is beyond the {} rows of an epoch",
                state.index, self.n
            )));
        }
        if state.epoch != self.state.epoch {
            self.order = self.epoch_order(state.epoch);
        }
        self.state = state;
        Ok(())
    }

    /// The indices of the next batch; `None` only when no batch can ever be formed (no items, or
    /// `drop_last` with fewer items than `batch_size`).
    pub fn next_indices(&mut self) -> Option<&[usize]> {
        let n = self.n;
        let full_only = self.drop_last;
        if n == 0 || (full_only && n < self.batch_size) {
            return None;
        }
        let left = n - self.state.index.min(n);
        if left == 0 || (full_only && left < self.batch_size) {
            self.state = CursorState {
                epoch: self.state.epoch + 1,
                index: 0,
            };
            self.order = self.epoch_order(self.state.epoch);
        }
        let lo = self.state.index;
        let hi = (lo + self.batch_size).min(n);
        self.state.index = hi;
        Some(&self.order[lo..hi])
    }
}

/// An endless walk over rows, epoch after epoch, in batches (see [`IndexCursor`]).
#[derive(Clone, Debug)]
pub struct RowCursor {
    rows: Vec<Row>,
    idx: IndexCursor,
}

impl RowCursor {
    /// A shuffling cursor at epoch 0, index 0, keeping the last partial batch of each epoch.
    pub fn new(rows: Vec<Row>, batch_size: usize, seed: u64) -> Result<Self> {
        if let Some(i) = rows.iter().position(|r| !r.is_consistent()) {
            return Err(Error::msg(format!(
                "row {i} has vectors of different lengths"
            )));
        }
        if let Some(first) = rows.first() {
            let t = first.seq_len();
            if let Some(i) = rows.iter().position(|r| r.seq_len() != t) {
                return Err(Error::msg(format!(
                    "row {i} has seq_len {}, row 0 has {t}",
                    rows[i].seq_len()
                )));
            }
        }
        let idx = IndexCursor::new(rows.len(), batch_size, seed)?;
        Ok(Self { rows, idx })
    }

    /// Turn the per-epoch shuffle off (rows in their given order every epoch) or on.
    pub fn with_shuffle(mut self, shuffle: bool) -> Self {
        self.idx = self.idx.with_shuffle(shuffle);
        self
    }

    /// Drop the last batch of an epoch when it has fewer than `batch_size` rows.
    pub fn with_drop_last(mut self, drop_last: bool) -> Self {
        self.idx = self.idx.with_drop_last(drop_last);
        self
    }

    pub fn num_rows(&self) -> usize {
        self.rows.len()
    }

    pub fn batch_size(&self) -> usize {
        self.idx.batch_size()
    }

    /// Batches in one epoch.
    pub fn batches_per_epoch(&self) -> usize {
        self.idx.batches_per_epoch()
    }

    /// The row order of `epoch` (indices into the rows given to [`RowCursor::new`]).
    pub fn epoch_order(&self, epoch: u64) -> Vec<usize> {
        self.idx.epoch_order(epoch)
    }

    pub fn state(&self) -> CursorState {
        self.idx.state()
    }

    /// Jump to a saved position. Errors if `index` is beyond the number of rows.
    pub fn restore(&mut self, state: CursorState) -> Result<()> {
        self.idx.restore(state)
    }

    /// The next batch; `None` only when no batch can ever be formed (no rows, or `drop_last` with
    /// fewer rows than `batch_size`).
    pub fn next_batch(&mut self) -> Option<Batch> {
        let rows = &self.rows;
        let ids = self.idx.next_indices()?;
        Some(
            Batch::from_rows(ids.iter().map(|&i| &rows[i]))
                .expect("rows were checked to share one seq_len and the range is non-empty"),
        )
    }
}

impl Iterator for RowCursor {
    type Item = Batch;
    fn next(&mut self) -> Option<Batch> {
        self.next_batch()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn best_fit_prefers_the_fullest_row() {
        // seq_len 10, lengths [6, 5, 4, 3]: sorted 6,5,4,3.
        // 6 -> row0 (free 4); 5 -> new row1 (free 5); 4 -> row0 (free 4 is the tightest that fits,
        // free 0); 3 -> row1 (free 2). Rows: [doc0, doc2], [doc1, doc3].
        let seqs: Vec<Sequence> = [6, 5, 4, 3]
            .iter()
            .map(|&n| Sequence::pretrain(vec![7; n]))
            .collect();
        let rows = pack_best_fit(&seqs, 10, 0, Overflow::Error).unwrap();
        let docs: Vec<Vec<usize>> = rows
            .iter()
            .map(|r| r.pieces.iter().map(|p| p.doc).collect())
            .collect();
        assert_eq!(docs, vec![vec![0, 2], vec![1, 3]]);
    }
}
