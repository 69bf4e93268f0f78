//! The instruction task for SFT and evaluation: arithmetic, "what does this program print?", and
//! questions about the invented world.
//!
//! The train/eval split is decided by a hash of the prompt ([`split_of`]), so the same problem always
//! lands in the same split and the splits are disjoint whatever the seeds. The built-in corpus
//! ([`super::corpus`]) leaves out arithmetic and program documents whose instruction prompt is in the
//! eval split, so eval problems are never seen in pretraining either. World facts are the exception by
//! design: pretraining teaches the facts, and the eval asks about facts whose *question* was never
//! trained on.

use gradus_tensor::rng::Rng;
use gradus_tensor::{Error, Result};
use serde::{Deserialize, Serialize};

use super::arith::{self, ArithConfig, ArithProblem};
use super::programs::{self, ProgramConfig};
use super::text::World;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskKind {
    Arith,
    Program,
    Fact,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Split {
    Train,
    Eval,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instruction {
    pub prompt: String,
    pub answer: String,
    pub kind: TaskKind,
}

/// One prompt in this many goes to the eval split.
pub const EVAL_ONE_IN: u64 = 5;

/// FNV-1a 64 of the prompt with surrounding whitespace trimmed.
fn fnv1a(s: &str) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in s.trim().bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

/// The split a prompt belongs to: eval for about one prompt in [`EVAL_ONE_IN`].
pub fn split_of(prompt: &str) -> Split {
    // Mix the high bits in: FNV's low bits are weak for short strings differing in the last byte.
    let h = fnv1a(prompt);
    #[allow(clippy::manual_is_multiple_of)]
    // `is_multiple_of` is newer than the workspace's rust-version
    if (h ^ (h >> 29) ^ (h >> 47)) % EVAL_ONE_IN == 0 {
        Split::Eval
    } else {
        Split::Train
    }
}

/// The prompt format of the instruction task in SFT, preference data and evaluation.
pub fn task_prompt(question: &str) -> String {
    format!("Question: {question}\nAnswer: ")
}

/// `"Compute 37+45."`
pub fn arith_prompt(p: &ArithProblem) -> String {
    format!("Compute {}.", p.expression())
}

/// `"What does this program print?\nlet a = 3;\nprint a * 2;"`
pub fn program_prompt(source: &str) -> String {
    format!("What does this program print?\n{}", source.trim_end())
}

/// Programs for the task: short, one printed value.
pub fn program_config() -> ProgramConfig {
    ProgramConfig {
        max_stmts: 3,
        single_print: true,
        ..ProgramConfig::default()
    }
}

/// Relative weights of the instruction kinds (need not sum to 1).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TaskMix {
    pub arith: f64,
    pub program: f64,
    pub fact: f64,
}

impl Default for TaskMix {
    fn default() -> Self {
        Self {
            arith: 1.0,
            program: 1.0,
            fact: 1.0,
        }
    }
}

/// How the answer to an arithmetic instruction is written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ArithAnswer {
    /// The value alone: `82`.
    #[default]
    Value,
    /// The problem restated, then its value: `37+45=82`, exactly the corpus's arithmetic document
    /// ([`ArithProblem::document`]). The model copies the operands next to the `=` before it
    /// computes, as it did in pretraining; [`is_correct`] reads the number after the last `=`.
    Equation,
}

/// What the instruction task asks: the kinds' weights and the size of arithmetic problems and
/// programs. The default is the task [`instructions`] draws.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TaskConfig {
    pub mix: TaskMix,
    pub arith: ArithConfig,
    /// Programs asked about; `single_print` should stay on (one-line answers).
    pub program: ProgramConfig,
    /// How arithmetic answers are written (default: the value alone).
    pub arith_answer: ArithAnswer,
}

impl Default for TaskConfig {
    fn default() -> Self {
        Self {
            mix: TaskMix::default(),
            arith: ArithConfig::default(),
            program: program_config(),
            arith_answer: ArithAnswer::Value,
        }
    }
}

impl TaskConfig {
    /// Errors name the field (`task.mix.fact`, `arith.max_digits`, ...).
    pub fn validate(&self) -> Result<()> {
        let m = self.mix;
        for (name, w) in [
            ("task.mix.arith", m.arith),
            ("task.mix.program", m.program),
            ("task.mix.fact", m.fact),
        ] {
            if !w.is_finite() || w < 0.0 {
                return Err(Error::config(
                    name,
                    format!("weight {w} must be finite and >= 0"),
                ));
            }
        }
        if m.arith + m.program + m.fact <= 0.0 {
            return Err(Error::config(
                "task.mix",
                "at least one weight must be positive",
            ));
        }
        self.arith.validate()?;
        self.program.validate()
    }
}

/// The kind of the next candidate. With the default (equal) weights this is `rng.below(3)`, so the
/// default task draws exactly what it always has.
fn pick_kind(rng: &mut Rng, m: &TaskMix) -> TaskKind {
    if m.arith == m.program && m.program == m.fact {
        return [TaskKind::Arith, TaskKind::Program, TaskKind::Fact][rng.below(3)];
    }
    let u = rng.uniform() * (m.arith + m.program + m.fact);
    if u < m.arith {
        TaskKind::Arith
    } else if u < m.arith + m.program || m.fact <= 0.0 {
        TaskKind::Program
    } else {
        TaskKind::Fact
    }
}

fn candidate(rng: &mut Rng, cfg: &TaskConfig) -> Instruction {
    match pick_kind(rng, &cfg.mix) {
        TaskKind::Arith => {
            let p = arith::sample(rng, &cfg.arith);
            Instruction {
                prompt: arith_prompt(&p),
                answer: match cfg.arith_answer {
                    ArithAnswer::Value => p.answer().to_string(),
                    ArithAnswer::Equation => p.document(),
                },
                kind: TaskKind::Arith,
            }
        }
        TaskKind::Program => {
            let g = programs::generate(rng, &cfg.program);
            let traced = if cfg.program.trace && !g.output.contains('\n') {
                programs::trace(&g.source)
            } else {
                None
            };
            Instruction {
                prompt: program_prompt(&g.source),
                answer: traced.unwrap_or(g.output),
                kind: TaskKind::Program,
            }
        }
        TaskKind::Fact => {
            let fact = World::get().random_fact(rng);
            Instruction {
                prompt: fact.question(),
                answer: fact.answer(),
                kind: TaskKind::Fact,
            }
        }
    }
}

/// `n` instructions of `split`, kinds drawn uniformly, deterministic in `seed` (a longer list starts
/// with the shorter one). Problems may repeat within a list (the fact pool is small); they never
/// cross splits.
pub fn instructions(n: usize, seed: u64, split: Split) -> Vec<Instruction> {
    instructions_with(n, seed, split, &TaskConfig::default())
}

/// [`instructions`] of the task `cfg` (which should be valid; an invalid one is clamped as the
/// generators do).
pub fn instructions_with(n: usize, seed: u64, split: Split, cfg: &TaskConfig) -> Vec<Instruction> {
    let mut rng = Rng::derive(seed, "gradus-data/instructions");
    let mut out = Vec::with_capacity(n);
    // About 1 in 5 candidates is eval: the bound is never reached in practice.
    let mut budget = 1000 + 100 * n;
    while out.len() < n && budget > 0 {
        budget -= 1;
        let c = candidate(&mut rng, cfg);
        if split_of(&c.prompt) == split {
            out.push(c);
        }
    }
    out
}

/// The first non-empty line, trimmed.
fn first_line(s: &str) -> &str {
    s.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("")
}

/// The first integer in `s` standing as a word of its own (not glued to a letter, digit or `_` before
/// it, so `x82` and `a1` hold none), with a `-` directly before it counted as its sign unless that
/// `-` itself follows a letter or digit (`5-3` reads 5; `a-3` reads 3).
fn first_integer(s: &str) -> Option<i128> {
    let b = s.as_bytes();
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let mut i = 0;
    while i < b.len() {
        if !b[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if start > 0 && word(b[start - 1]) {
            continue; // part of a name such as `x82`
        }
        let negative = start > 0 && b[start - 1] == b'-' && (start < 2 || !word(b[start - 2]));
        let v: i128 = s[start..i].parse().ok()?; // None beyond i128
        return Some(if negative { -v } else { v });
    }
    None
}

fn normalize_words(s: &str) -> String {
    let s = s
        .trim()
        .trim_end_matches(['.', '!', '?', '"', '\'', '`'])
        .trim_start_matches(['"', '\'', '`'])
        .trim();
    s.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// The value a numeric answer states: the first integer after its last `=` (`"37+45=82"` → 82), or
/// its first integer when it has no `=` (`"82"`, `"The answer is 82"`; not `"x82"`).
pub fn stated_value(answer: &str) -> Option<i128> {
    let line = first_line(answer);
    first_integer(line.rsplit('=').next().unwrap_or(line))
}

/// Whether `completion` answers `instr`.
///
/// Only the first non-empty line counts. Numeric answers (arithmetic, programs): the value it
/// states ([`stated_value`]: the first integer after the last `=` on that line if there is one,
/// `"37+45=82"`, else the first integer on the line, `"82"`, `" 82.\n"`, `"The answer is 82"`; not
/// `"x82"`), compared as numbers with the value the expected answer states (so an expected
/// `"37+45=82"`, [`ArithAnswer::Equation`], accepts `"82"` as well). Fact answers: the line with
/// surrounding quotes and a final `.`/`!`/`?` removed, whitespace collapsed, case ignored.
pub fn is_correct(instr: &Instruction, completion: &str) -> bool {
    let line = first_line(completion);
    match instr.kind {
        TaskKind::Arith | TaskKind::Program => {
            // A program answer of several lines is compared line by line over as many lines.
            if instr.answer.trim().lines().count() > 1 {
                let want: Vec<Option<i128>> = instr.answer.lines().map(first_integer).collect();
                let got: Vec<Option<i128>> = completion
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .take(want.len())
                    .map(first_integer)
                    .collect();
                return got == want;
            }
            let want = match stated_value(&instr.answer) {
                Some(v) => v,
                None => return false,
            };
            stated_value(line) == Some(want)
        }
        TaskKind::Fact => {
            !line.is_empty() && normalize_words(line) == normalize_words(&instr.answer)
        }
    }
}
