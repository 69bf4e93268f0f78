//! Named numeric tolerances used by tests across the workspace.

/// Fused op vs its `_ref` twin in f32 (forward and gradient, max abs diff relative to scale).
pub const FUSED_VS_REF_F32: f32 = 1e-4;
/// gradus vs transformers logits on small random checkpoints (max abs).
pub const HF_LOGITS_PARITY: f32 = 1e-4;

/// Max absolute difference between two f32 slices.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}
