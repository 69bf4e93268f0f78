//! The GEMMs of one training step of the fast engine (`crates/gradus-model/src/fast/`), per preset.
//!
//! The engine's `linear::matmul(c, accumulate, a, a_t, b, b_t, m, n, k)` computes row-major
//! `C (m×n) [+]= op(A) op(B)`, A stored (m×k) or, when `a_t`, (k×m); B stored (k×n) or, when `b_t`,
//! (n×k). A linear layer with W stored (out, in) (PyTorch layout) and N = batch × seq token rows
//! issues three products per step (fast/linear.rs):
//! - forward `y = x Wᵀ`: m = N, n = out, k = in, layout NT (B = W: a weight);
//! - input gradient `dx = dy W`: m = N, n = in, k = out, layout NN (B = W: the same weight);
//! - weight gradient `dW += dyᵀ x`: m = out, n = in, k = N, layout TN (both operands activations).
//!
//! Per decoder layer the linears are q, k, v (D → H·Dh, D → Hkv·Dh), o (H·Dh → D), gate and up
//! (D → F) and down (F → D); then the untied LM head (D → V). With the default logits budget
//! (16 Mi floats) both presets keep the (N, V) logits, so the head's forward GEMM runs once.
//! [`attention_gemms`] lists the products of the fused attention (64×64 tiles, one `gemm` call
//! on one thread each, inside rayon tasks); LoRA adapters (only with `--lora`) are not listed.

/// Operand layouts of one GEMM, as the engine's `linear::matmul` flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Layout {
    /// A stored (k×m) instead of (m×k).
    pub a_t: bool,
    /// B stored (n×k) instead of (k×n).
    pub b_t: bool,
}

impl Layout {
    /// Forward `x Wᵀ`.
    pub const NT: Layout = Layout {
        a_t: false,
        b_t: true,
    };
    /// Input gradient `dy W`, and plain row-major products.
    pub const NN: Layout = Layout {
        a_t: false,
        b_t: false,
    };
    /// Weight gradient `dyᵀ x`.
    pub const TN: Layout = Layout {
        a_t: true,
        b_t: false,
    };
    /// Both transposed (not used by the engine; tested for completeness).
    pub const TT: Layout = Layout {
        a_t: true,
        b_t: true,
    };

    /// "NT", "NN", "TN" or "TT".
    pub fn name(self) -> &'static str {
        match (self.a_t, self.b_t) {
            (false, false) => "NN",
            (false, true) => "NT",
            (true, false) => "TN",
            (true, true) => "TT",
        }
    }

    /// Parses [`Layout::name`].
    pub fn parse(s: &str) -> Option<Layout> {
        match s {
            "NN" => Some(Layout::NN),
            "NT" => Some(Layout::NT),
            "TN" => Some(Layout::TN),
            "TT" => Some(Layout::TT),
            _ => None,
        }
    }

    /// (row stride, column stride) of A viewed as (m×k).
    pub fn a_strides(self, m: usize, k: usize) -> (usize, usize) {
        if self.a_t {
            (1, m)
        } else {
            (k, 1)
        }
    }

    /// (row stride, column stride) of B viewed as (k×n).
    pub fn b_strides(self, n: usize, k: usize) -> (usize, usize) {
        if self.b_t {
            (1, k)
        } else {
            (n, 1)
        }
    }
}

/// One distinct GEMM of a training step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gemm {
    /// Group: `base`, `lab` (a preset's step) or `peak` (square, for the machine's sgemm peak).
    pub group: &'static str,
    /// Where the engine issues it (e.g. "fwd q,k,v,o").
    pub role: String,
    /// Rows of C.
    pub m: usize,
    /// Columns of C.
    pub n: usize,
    /// Inner dimension.
    pub k: usize,
    /// Operand layouts.
    pub layout: Layout,
    /// How many times one training step issues it (0 for the peak shape).
    pub count: usize,
    /// B is a weight matrix (forward and input gradient): it could be packed once per optimizer
    /// step and reused.
    pub b_is_weight: bool,
    /// The engine issues it on one thread (attention tiles inside rayon tasks).
    pub single_thread: bool,
}

impl Gemm {
    /// A stable identifier, e.g. `base:NT:2048x256x256`.
    pub fn id(&self) -> String {
        format!(
            "{}:{}:{}x{}x{}",
            self.group,
            self.layout.name(),
            self.m,
            self.n,
            self.k
        )
    }

    /// Floating-point operations of one call, 2·m·n·k.
    pub fn flops(&self) -> f64 {
        2.0 * self.m as f64 * self.n as f64 * self.k as f64
    }
}

/// The model sizes of a `gradus-bench` preset (crates/gradus-bench/src/main.rs `ModelArgs::sizes`,
/// the same as bench/torch_common.py).
#[derive(Clone, Copy, Debug)]
pub struct Preset {
    /// `base` or `lab`.
    pub name: &'static str,
    /// V.
    pub vocab: usize,
    /// D.
    pub hidden: usize,
    /// Decoder layers.
    pub layers: usize,
    /// Query heads H.
    pub heads: usize,
    /// Key/value heads (= heads: MHA in both presets).
    pub kv_heads: usize,
    /// F.
    pub intermediate: usize,
    /// T.
    pub seq: usize,
    /// B.
    pub batch: usize,
}

/// `--preset base`: (vocab 4096, hidden 256, layers 4, heads 4, intermediate 1024, seq 256, batch 8).
pub const BASE: Preset = Preset {
    name: "base",
    vocab: 4096,
    hidden: 256,
    layers: 4,
    heads: 4,
    kv_heads: 4,
    intermediate: 1024,
    seq: 256,
    batch: 8,
};

/// `--preset lab`: (vocab 128, hidden 64, layers 2, heads 4, intermediate 256, seq 128, batch 32).
pub const LAB: Preset = Preset {
    name: "lab",
    vocab: 128,
    hidden: 64,
    layers: 2,
    heads: 4,
    kv_heads: 4,
    intermediate: 256,
    seq: 128,
    batch: 32,
};

/// Every distinct (m, n, k, layout) GEMM of one full-training step of `p` (untied head, no LoRA),
/// with its count per step, in the order the engine first issues it.
pub fn step_gemms(p: &Preset) -> Vec<Gemm> {
    let n_tok = p.batch * p.seq;
    let d = p.hidden;
    let dh = p.hidden / p.heads;
    let qw = p.heads * dh;
    let kw = p.kv_heads * dh;
    // (name, in, out, per step)
    let mut linears: Vec<(&str, usize, usize, usize)> = vec![
        ("q", d, qw, p.layers),
        ("k", d, kw, p.layers),
        ("v", d, kw, p.layers),
        ("o", qw, d, p.layers),
        ("gate", d, p.intermediate, p.layers),
        ("up", d, p.intermediate, p.layers),
        ("down", p.intermediate, d, p.layers),
        ("lm_head", d, p.vocab, 1),
    ];
    linears.retain(|l| l.3 > 0);
    let mut out: Vec<Gemm> = Vec::new();
    let mut add = |role: String, m, n, k, layout, count, b_is_weight| {
        if let Some(g) = out
            .iter_mut()
            .find(|g| g.m == m && g.n == n && g.k == k && g.layout == layout)
        {
            g.count += count;
            g.role.push(',');
            g.role.push_str(role.rsplit(' ').next().unwrap_or(""));
        } else {
            out.push(Gemm {
                group: p.name,
                role,
                m,
                n,
                k,
                layout,
                count,
                b_is_weight,
                single_thread: false,
            });
        }
    };
    for &(name, inp, o, c) in &linears {
        add(format!("fwd {name}"), n_tok, o, inp, Layout::NT, c, true);
    }
    for &(name, inp, o, c) in &linears {
        add(format!("dX {name}"), n_tok, inp, o, Layout::NN, c, true);
    }
    for &(name, inp, o, c) in &linears {
        add(format!("dW {name}"), o, inp, n_tok, Layout::TN, c, false);
    }
    out
}

/// Square row-major GEMMs for the machine's sgemm peak.
pub fn peak_gemms() -> Vec<Gemm> {
    [1024usize, 2048]
        .iter()
        .map(|&s| Gemm {
            group: "peak",
            role: "square".into(),
            m: s,
            n: s,
            k: s,
            layout: Layout::NN,
            count: 0,
            b_is_weight: false,
            single_thread: false,
        })
        .collect()
}

/// Query / key block of the fused attention (`crates/gradus-tensor/src/ops/attention.rs` BR, BC).
pub const ATT_BLOCK: usize = 64;

/// The tile products of the fused causal attention (`crates/gradus-tensor/src/ops/attention.rs`)
/// in one step of `p`, group `<preset>-attn`, each issued on one thread. Per visible (query
/// block, key block) pair: forward S = Q Kᵀ (NT, 64×64×Dh) and O += P V (NN, 64×Dh×64);
/// backward S again, dP = dO Vᵀ (NT), dV += Pᵀ dO and dK += dSᵀ Q (TN, 64×Dh×64), dQ += dS K
/// (NN). Causal pairs per (batch, head): nb(nb+1)/2 with nb = T/64 blocks (T a multiple of 64 in
/// both presets; packed segments only skip more pairs). In the engine Q, K, V, dO rows are
/// strided by H·Dh; the study times contiguous tiles.
pub fn attention_gemms(p: &Preset) -> Vec<Gemm> {
    let dh = p.hidden / p.heads;
    let nb = p.seq.div_ceil(ATT_BLOCK);
    let pairs = p.batch * p.heads * nb * (nb + 1) / 2 * p.layers;
    let b = ATT_BLOCK;
    let group = match p.name {
        "base" => "base-attn",
        "lab" => "lab-attn",
        _ => "attn",
    };
    let g = |role: &str, m, n, k, layout, per_pair: usize| Gemm {
        group,
        role: role.into(),
        m,
        n,
        k,
        layout,
        count: per_pair * pairs,
        b_is_weight: false,
        single_thread: true,
    };
    vec![
        g("S = QKᵀ (fwd, bwd), dP = dO Vᵀ", b, b, dh, Layout::NT, 3),
        g("O += PV, dQ += dS K", b, dh, b, Layout::NN, 2),
        g("dV += Pᵀ dO, dK += dSᵀ Q", b, dh, b, Layout::TN, 2),
    ]
}

/// Every GEMM the study measures: base, lab, their attention tiles, peak.
pub fn all_gemms() -> Vec<Gemm> {
    let mut v = step_gemms(&BASE);
    v.extend(step_gemms(&LAB));
    v.extend(attention_gemms(&BASE));
    v.extend(attention_gemms(&LAB));
    v.extend(peak_gemms());
    v
}

/// A markdown table of [`step_gemms`] for `p` (the README's shape list).
pub fn markdown(p: &Preset) -> String {
    let mut s = String::from(
        "| layout | M | N | K | count/step | GFLOP/step | B is a weight | role |\n|---|---:|---:|---:|---:|---:|---|---|\n",
    );
    let mut total = 0.0;
    for g in step_gemms(p) {
        let f = g.flops() * g.count as f64 / 1e9;
        total += f;
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {:.3} | {} | {} |\n",
            g.layout.name(),
            g.m,
            g.n,
            g.k,
            g.count,
            f,
            if g.b_is_weight { "yes" } else { "no" },
            g.role
        ));
    }
    s.push_str(&format!("| | | | | | **{total:.3}** | | total |\n"));
    s
}

/// A markdown table of [`attention_gemms`] for `p`.
pub fn markdown_attention(p: &Preset) -> String {
    let mut s = String::from(
        "| layout | M | N | K | count/step | GFLOP/step | role |\n|---|---:|---:|---:|---:|---:|---|\n",
    );
    let mut total = 0.0;
    for g in attention_gemms(p) {
        let f = g.flops() * g.count as f64 / 1e9;
        total += f;
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {:.3} | {} |\n",
            g.layout.name(),
            g.m,
            g.n,
            g.k,
            g.count,
            f,
            g.role
        ));
    }
    s.push_str(&format!(
        "| | | | | | **{total:.3}** | total (one thread per call) |\n"
    ));
    s
}
