//! Issue 12's GEMM study: the GEMMs one training step of the fast engine issues ([`shapes`]), the
//! candidates that could run them ([`candidates`]: the gemm crate as the engine uses it, faer's
//! matmul, our own packed sgemm in [`own`]), and an f64 reference ([`reference`]) the tests check
//! every candidate against. The `gemm-study` binary times them; `bench/gemm_study.sh` runs it
//! beside MKL's `torch.matmul` and prints the table.

pub mod candidates;
pub mod own;
pub mod reference;
pub mod shapes;
