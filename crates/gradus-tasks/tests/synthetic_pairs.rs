//! The synthetic preference pairs: latent utility, noisy raters, agreement levels, and their pair
//! batches.

use gradus_data::chat::ChatTemplate;
use gradus_data::preference::*;
use gradus_data::tokenizer::Tokenizer;
use gradus_tasks::{preference_pairs, Split, SyntheticPairsConfig};

fn tok() -> Tokenizer {
    let corpus: Vec<String> = (0..50)
        .map(|i| format!("Question: what is {i}?\nAnswer: it is {i}. no yes maybe"))
        .collect();
    let mut t = Tokenizer::train_bpe(
        corpus.iter(),
        300,
        &["<|endoftext|>", "<|pad|>", "<|im_start|>", "<|im_end|>"],
        2,
    )
    .unwrap();
    t.set_bos(Some("<|endoftext|>")).unwrap();
    t.set_eos(Some("<|endoftext|>")).unwrap();
    t.set_pad(Some("<|pad|>")).unwrap();
    t
}

#[test]
fn synthetic_pairs_have_agreement_and_follow_utility() {
    let cfg = SyntheticPairsConfig::default();
    let a = preference_pairs(300, 7, Split::Train, &cfg);
    assert_eq!(
        a,
        preference_pairs(300, 7, Split::Train, &cfg),
        "deterministic"
    );
    assert_eq!(a.len(), 300);
    let mut fractions = std::collections::BTreeSet::new();
    let mut utility_agrees = 0;
    for p in &a {
        assert_ne!(p.chosen, p.rejected);
        let f = p.chosen_fraction.unwrap();
        assert!(f >= 0.5, "majority is chosen: {f}");
        fractions.insert((f * 100.0) as u32);
        if p.chosen_reward.unwrap() >= p.rejected_reward.unwrap() {
            utility_agrees += 1;
        }
        assert_eq!(p.chosen_scores.as_ref().unwrap().len(), 3);
    }
    // Raters disagree on some pairs (several agreement levels), and the majority mostly follows
    // the latent utility (noisy BT raters with temperature 1: well above chance).
    assert!(fractions.len() >= 3, "{fractions:?}");
    assert!(utility_agrees as f64 / 300.0 > 0.75, "{utility_agrees}");
    let cats: std::collections::BTreeSet<_> =
        a.iter().map(|p| p.category.clone().unwrap()).collect();
    assert_eq!(cats.len(), 3);
}

#[test]
fn pair_batch_masks_exactly_the_completions() {
    let t = tok();
    let tpl = ChatTemplate::chatml();
    let pairs = preference_pairs(6, 1, Split::Train, &SyntheticPairsConfig::default());
    let (tp, _) = tokenize_pairs(&t, &tpl, &pairs, 512, BadPairPolicy::Error).unwrap();
    let refs: Vec<&TokenizedPair> = tp.iter().collect();
    let b = pair_batch(&refs, t.pad_id().unwrap()).unwrap();
    assert_eq!(b.rows, 12);
    for (i, p) in tp.iter().enumerate() {
        for (row, comp) in [(i, &p.chosen), (i + tp.len(), &p.rejected)] {
            let w = &b.loss_weight[row * b.seq_len..(row + 1) * b.seq_len];
            assert_eq!(w.iter().sum::<f32>() as usize, comp.len(), "row {row}");
            // The first weighted target is the first completion token, predicted from the last prompt token.
            let first = w.iter().position(|&x| x > 0.0).unwrap();
            assert_eq!(first, p.prompt.len() - 1);
            assert_eq!(b.targets[row * b.seq_len + first], comp[0]);
        }
    }
}
