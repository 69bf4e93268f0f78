//! gradus-tasks: synthetic task generators with their checkers, seeded and streaming, no download.
//!
//! The built-in corpus and instruction task: everything `gradus quickstart` and the tests need to
//! train a tiny model with no download.
//!
//! - [`arith`]: `37+45=82`, `90-17=73`, `12*3=36`.
//! - [`lang`]: a tiny imperative language (lexer, parser, printer, interpreter; [`lang::run`]).
//! - [`programs`]: random valid programs and their outputs, as documents ending in `# output: 13`.
//! - [`text`]: templated English and facts about a fixed invented world ("The capital of Zorland is
//!   Quib.").
//! - [`instruct`]: prompt/answer pairs with disjoint train/eval splits and [`is_correct`].
//! - [`synthetic_pairs`]: preference pairs over those prompts from a latent utility and noisy raters.
//! - [`modular`]: modular addition `a b = c` (mod p) with a seeded train/held-out split (grokking;
//!   Hu et al. 2023's training maps).
//! - [`parity`]: sparse parity (n ±1 bits, label = XOR of k seeded relevant bits).
//!
//! Everything is deterministic given a seed. Document `i` of a corpus is drawn from its own stream,
//! derived from `(seed, i)`, so it does not depend on `n_docs` (a longer corpus extends a shorter
//! one) and documents are generated in parallel.
//!
//! - [`corpus`]: the mixed pretraining corpus ([`CorpusConfig`], [`corpus`]).
//!
//! The labs add their generators here, each beside its checker:
//! - [`bursty`]: bursty few-shot classification sequences (Chan et al.; Reddy) with ICL/IWL
//!   evaluation splits;
//! - [`phf`]: misalignment scorers (PEP8-style checks, forbidden patterns) and a synthetic code
//!   corpus with a known fraction of bad lines (pretraining with human feedback, Korbak et al.);
//! - [`boolean`]: Boolean function classes as (x, f(x)) prompts with the baselines of
//!   Bhattamishra et al.;
//! - [`ehrlich`]: Ehrlich functions (Stanton et al. 2024), holo-bench's closed-form test
//!   functions for sequence design, and [`ga`]: holo's genetic-algorithm baseline with a
//!   counting oracle (LLOME, Chen, Stanton et al. 2024);
//! - [`evo`]: program synthesis toward a hidden target behaviour in the tiny language (graded
//!   fitness, a counting evaluator, random AST mutation and crossover), the objective of
//!   EvoPrompting (Chen, Dohan & So 2023).
//! - [`depgrammar`]: a templated dependency grammar with gold heads, relation labels, number
//!   agreement across attractors and BLiMP-style minimal pairs (syntactic attention structure,
//!   Chen et al. 2024);
//! - [`code_tasks`]: programming tasks in the tiny language with unit tests, templated feedback
//!   from the first failing test and a bug generator (ILF on code, Chen et al. 2023).

pub mod arith;
pub mod boolean;
pub mod bursty;
pub mod code_tasks;
pub mod corpus;
pub mod depgrammar;
pub mod ehrlich;
pub mod evo;
pub mod ga;
pub mod instruct;
pub mod lang;
pub mod modular;
pub mod parity;
pub mod phf;
pub mod programs;
pub mod synthetic_pairs;
pub mod text;

pub use arith::{ArithConfig, ArithOp, ArithProblem};
pub use corpus::*;
pub use instruct::{
    instructions, instructions_with, is_correct, split_of, stated_value, task_prompt, ArithAnswer,
    Instruction, Split, TaskConfig, TaskKind, TaskMix,
};
pub use lang::{run, ProgramError};
pub use modular::ModularConfig;
pub use programs::{GeneratedProgram, ProgramConfig};
pub use synthetic_pairs::{preference_pairs, SyntheticPairsConfig};
pub use text::World;
