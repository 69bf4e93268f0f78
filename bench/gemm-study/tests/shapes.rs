//! The shape list against hand-derived numbers (bench/gemm-study/README.md "Check by hand").

use gemm_study::shapes::{step_gemms, Layout, BASE, LAB};

fn step_flops(p: &gemm_study::shapes::Preset) -> f64 {
    step_gemms(p)
        .iter()
        .map(|g| g.flops() * g.count as f64)
        .sum()
}

/// One step = 3 × forward; forward = 2·N·(L·(4D² + 3DF) + DV).
/// base: 2·2048·(4·(4·65536 + 3·262144) + 1048576) = 4096·5242880 = 21 474 836 480; ×3.
/// lab:  2·4096·(2·(4·4096 + 3·16384) + 8192) = 8192·139264 = 1 140 850 688; ×3.
#[test]
fn step_flops_match_hand_derivation() {
    assert_eq!(step_flops(&BASE), 3.0 * 21_474_836_480.0);
    assert_eq!(step_flops(&LAB), 3.0 * 1_140_850_688.0);
}

/// 8 linears (7 per layer × L + head) × 3 products each.
#[test]
fn every_product_counted_once() {
    for p in [BASE, LAB] {
        let calls: usize = step_gemms(&p).iter().map(|g| g.count).sum();
        assert_eq!(calls, 3 * (7 * p.layers + 1), "{}", p.name);
    }
    // base: q,k,v,o all 256→256, so the forward (NT) 2048×256×256 is issued 4 per layer.
    let g = step_gemms(&BASE);
    let fwd = g
        .iter()
        .find(|g| g.layout == Layout::NT && (g.m, g.n, g.k) == (2048, 256, 256))
        .unwrap();
    assert_eq!(fwd.count, 16);
    // The weight gradient of the head: dW (V×D) = dlogitsᵀ h, K = token rows.
    assert!(g
        .iter()
        .any(|g| g.layout == Layout::TN && (g.m, g.n, g.k) == (4096, 256, 2048) && g.count == 1));
    // Only forward and dX have a weight as B.
    assert!(g.iter().all(|g| g.b_is_weight == (g.layout != Layout::TN)));
}

/// Strides of the engine's layouts: A (m×k) row-major or stored (k×m); B (k×n) or stored (n×k).
#[test]
fn layout_strides() {
    assert_eq!(Layout::NN.a_strides(3, 5), (5, 1));
    assert_eq!(Layout::TN.a_strides(3, 5), (1, 3));
    assert_eq!(Layout::NN.b_strides(4, 5), (4, 1));
    assert_eq!(Layout::NT.b_strides(4, 5), (1, 5));
    for l in [Layout::NN, Layout::NT, Layout::TN, Layout::TT] {
        assert_eq!(Layout::parse(l.name()), Some(l));
    }
}

/// Attention tiles: pairs = B·H·nb(nb+1)/2·L with nb = T/64; 7 products per pair.
/// base: 8·4·10·4 = 1280 pairs, 8960 calls, 7 · 2·64³ · 1280 = 4 697 620 480 FLOPs.
/// lab: 32·4·3·2 = 768 pairs, 5376 calls, 768 · (3·2·64·64·16 + 4·2·64·16·64) = 704 643 072.
#[test]
fn attention_tiles_match_hand_derivation() {
    use gemm_study::shapes::attention_gemms;
    for (p, calls, flops) in [(BASE, 8960, 4_697_620_480.0), (LAB, 5376, 704_643_072.0)] {
        let g = attention_gemms(&p);
        assert_eq!(
            g.iter().map(|g| g.count).sum::<usize>(),
            calls,
            "{}",
            p.name
        );
        let f: f64 = g.iter().map(|g| g.flops() * g.count as f64).sum();
        assert_eq!(f, flops, "{}", p.name);
        assert!(g.iter().all(|g| g.single_thread));
    }
}
