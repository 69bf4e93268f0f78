//! Arithmetic problems: `37+45=82`, `90-17=73`, `12*3=36`.
//!
//! Operands are natural numbers with a configurable number of digits; subtraction puts the larger
//! operand first so results are never negative; the second factor of a product has at most
//! `mul_max_digits` digits (multi-digit by one-digit products by default, which small models learn).

use gradus_tensor::rng::Rng;
use gradus_tensor::{Error, Result};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ArithOp {
    Add,
    Sub,
    Mul,
}

impl ArithOp {
    pub fn symbol(self) -> char {
        match self {
            ArithOp::Add => '+',
            ArithOp::Sub => '-',
            ArithOp::Mul => '*',
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ArithConfig {
    /// Digits of an operand are drawn uniformly from `min_digits..=max_digits` (1..=9).
    pub min_digits: u32,
    pub max_digits: u32,
    /// Most digits of the second factor of a product.
    pub mul_max_digits: u32,
    /// Operations drawn uniformly.
    pub ops: Vec<ArithOp>,
}

impl Default for ArithConfig {
    fn default() -> Self {
        Self {
            min_digits: 1,
            max_digits: 2,
            mul_max_digits: 1,
            ops: vec![ArithOp::Add, ArithOp::Sub, ArithOp::Mul],
        }
    }
}

impl ArithConfig {
    pub fn validate(&self) -> Result<()> {
        if !(1..=9).contains(&self.min_digits) || !(1..=9).contains(&self.max_digits) {
            return Err(Error::config(
                "arith.min_digits/max_digits",
                "must be in 1..=9",
            ));
        }
        if self.min_digits > self.max_digits {
            return Err(Error::config(
                "arith.min_digits",
                "must not exceed max_digits",
            ));
        }
        if !(1..=9).contains(&self.mul_max_digits) {
            return Err(Error::config("arith.mul_max_digits", "must be in 1..=9"));
        }
        if self.ops.is_empty() {
            return Err(Error::config("arith.ops", "needs at least one operation"));
        }
        Ok(())
    }
}

/// One problem `a op b`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ArithProblem {
    pub a: u64,
    pub op: ArithOp,
    pub b: u64,
}

impl ArithProblem {
    /// `"37+45"`.
    pub fn expression(&self) -> String {
        format!("{}{}{}", self.a, self.op.symbol(), self.b)
    }

    /// The value; operands of at most 9 digits cannot overflow.
    pub fn answer(&self) -> i128 {
        let (a, b) = (self.a as i128, self.b as i128);
        match self.op {
            ArithOp::Add => a + b,
            ArithOp::Sub => a - b,
            ArithOp::Mul => a * b,
        }
    }

    /// The corpus document `"37+45=82"`.
    pub fn document(&self) -> String {
        format!("{}={}", self.expression(), self.answer())
    }
}

fn number(rng: &mut Rng, digits: u32) -> u64 {
    if digits <= 1 {
        return rng.below(10) as u64;
    }
    let lo = 10u64.pow(digits - 1);
    lo + rng.below((9 * lo) as usize) as u64
}

/// Draw one problem. An invalid config is clamped (digits to 1..=9, no ops = addition).
pub fn sample(rng: &mut Rng, cfg: &ArithConfig) -> ArithProblem {
    let max = cfg.max_digits.clamp(1, 9);
    let min = cfg.min_digits.clamp(1, max);
    let op = if cfg.ops.is_empty() {
        ArithOp::Add
    } else {
        cfg.ops[rng.below(cfg.ops.len())]
    };
    let digits =
        |rng: &mut Rng, hi: u32| min.min(hi) + rng.below((hi - min.min(hi) + 1) as usize) as u32;
    let da = digits(rng, max);
    let a = number(rng, da);
    let b_max = if op == ArithOp::Mul {
        cfg.mul_max_digits.clamp(1, 9).min(max)
    } else {
        max
    };
    let db = digits(rng, b_max);
    let b = number(rng, db);
    let (a, b) = if op == ArithOp::Sub && b > a {
        (b, a)
    } else {
        (a, b)
    };
    ArithProblem { a, op, b }
}
