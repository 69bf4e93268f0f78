//! Random valid programs in the [`lang`](super::lang) language, with their outputs.
//!
//! Programs are built as syntax trees so that they are valid by construction in the ways that matter:
//! every variable is declared before use, divisors are positive literals (no division by zero), and
//! loops are counted (`let i = 0; while i < N { ...; i = i + 1; }` with a body that never assigns the
//! counter), so they terminate. Each candidate is still printed, parsed back and run with the real
//! interpreter; one that fails (overflow, step limit) or prints a value beyond
//! [`ProgramConfig::max_abs_value`] is redrawn, so what comes out always runs and its recorded output
//! is exactly what [`lang::run`] prints.

use gradus_tensor::rng::Rng;
use gradus_tensor::{Error, Result};
use serde::{Deserialize, Serialize};

use super::lang::{self, BinOp, Expr, ExprKind, Limits, Program, Stmt, StmtKind};

/// Size and shape of generated programs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProgramConfig {
    /// Statements between the opening `let` and the closing `print`s (drawn from `1..=max_stmts`).
    pub max_stmts: usize,
    /// Deepest operator nesting of a generated expression.
    pub max_expr_depth: usize,
    /// Literals are drawn from `0..=max_literal`.
    pub max_literal: i64,
    /// Whether `while` loops may appear.
    pub loops: bool,
    /// Whether `if`/`else` may appear.
    pub branches: bool,
    /// Loop bounds are drawn from `1..=max_loop_iters`.
    pub max_loop_iters: i64,
    /// Programs printing a value with a larger magnitude are redrawn.
    pub max_abs_value: i64,
    /// Print exactly one value at the end (the instruction task wants a one-line answer).
    pub single_print: bool,
    /// Write the program's step-by-step [`trace`] into its corpus document (a `# trace: ` comment
    /// line before the outputs) and use it as the instruction task's answer (straight-line
    /// programs only; others keep the plain output).
    pub trace: bool,
}

impl Default for ProgramConfig {
    fn default() -> Self {
        Self {
            max_stmts: 4,
            max_expr_depth: 2,
            max_literal: 20,
            loops: true,
            branches: true,
            max_loop_iters: 5,
            max_abs_value: 9_999,
            single_print: false,
            trace: false,
        }
    }
}

impl ProgramConfig {
    pub fn validate(&self) -> Result<()> {
        if self.max_stmts == 0 || self.max_stmts > 64 {
            return Err(Error::config("program.max_stmts", "must be in 1..=64"));
        }
        if self.max_expr_depth > 8 {
            return Err(Error::config("program.max_expr_depth", "must be at most 8"));
        }
        if !(1..=1_000_000).contains(&self.max_literal) {
            return Err(Error::config(
                "program.max_literal",
                "must be in 1..=1000000",
            ));
        }
        if !(1..=100).contains(&self.max_loop_iters) {
            return Err(Error::config(
                "program.max_loop_iters",
                "must be in 1..=100",
            ));
        }
        if self.max_abs_value < self.max_literal {
            return Err(Error::config(
                "program.max_abs_value",
                "must be at least max_literal",
            ));
        }
        Ok(())
    }
}

/// A generated program and what it prints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GeneratedProgram {
    /// Source text, one statement per line, ending with a line break.
    pub source: String,
    /// What [`lang::run`] returns for `source`.
    pub output: String,
}

impl GeneratedProgram {
    /// The corpus document: the source, then one `# output: <line>` comment per printed line. The
    /// document is itself a valid program (comments are ignored).
    pub fn document(&self) -> String {
        let mut doc = self.source.clone();
        for line in self.output.lines() {
            doc.push_str("# output: ");
            doc.push_str(line);
            doc.push('\n');
        }
        doc.pop(); // no trailing line break
        doc
    }

    /// [`GeneratedProgram::document`] with the program's [`trace`] as a comment line before the
    /// outputs (`# trace: a=5, b=5*3=15, print b=15`); the plain document when it has none.
    pub fn traced_document(&self) -> String {
        match trace(&self.source) {
            Some(t) => {
                let mut doc = self.source.clone();
                doc.push_str("# trace: ");
                doc.push_str(&t);
                doc.push('\n');
                for line in self.output.lines() {
                    doc.push_str("# output: ");
                    doc.push_str(line);
                    doc.push('\n');
                }
                doc.pop();
                doc
            }
            None => self.document(),
        }
    }
}

/// One expression of a straight-line program with its operands' values written in: `5` for a
/// literal or a variable holding 5, `5*3=15` for an operation; with its value. `None` for nested
/// or non-arithmetic expressions, or a value the interpreter would refuse (overflow, division by
/// zero).
fn trace_expr(e: &Expr, env: &std::collections::HashMap<String, i64>) -> Option<(String, i64)> {
    let leaf = |e: &Expr| match &e.kind {
        ExprKind::Int(v) => Some(*v),
        ExprKind::Var(x) => env.get(x).copied(),
        _ => None,
    };
    match &e.kind {
        ExprKind::Binary(op, l, r) => {
            let (a, b) = (leaf(l)?, leaf(r)?);
            // The interpreter's semantics: i64, truncating division, remainder with the dividend's sign.
            let v = match op {
                BinOp::Add => a.checked_add(b)?,
                BinOp::Sub => a.checked_sub(b)?,
                BinOp::Mul => a.checked_mul(b)?,
                BinOp::Div => a.checked_div(b)?,
                BinOp::Rem => a.checked_rem(b)?,
                _ => return None,
            };
            Some((format!("{a}{}{b}={v}", op.symbol()), v))
        }
        _ => leaf(e).map(|v| (v.to_string(), v)),
    }
}

/// The step-by-step trace of a straight-line program (only `let`, assignments and `print`, each
/// expression a value or one operation on two values), the scratchpad the instruction task's
/// answer can show: one item per statement, separated by `, `: `x=5` for `let x = 5;` or
/// `x = y;` (the value written in), `x=5*3=15` for an operation (operands' values written in,
/// then the result), `print E=V` for a print (`print b=15`, `print 15-2=13`, `print 7=7`). The
/// value printed last is the number after the trace's last `=`. `None` for any other program
/// (loops, branches, nested expressions).
///
/// `let a = 5;\nlet b = a * 3;\nprint b - 2;` → `a=5, b=5*3=15, print 15-2=13`.
pub fn trace(source: &str) -> Option<String> {
    let program = lang::parse(source).ok()?;
    let mut env = std::collections::HashMap::new();
    let mut items = Vec::with_capacity(program.stmts.len());
    for s in &program.stmts {
        match &s.kind {
            StmtKind::Let { name, value } | StmtKind::Assign { name, value } => {
                let (text, v) = trace_expr(value, &env)?;
                items.push(format!("{name}={text}"));
                env.insert(name.clone(), v);
            }
            StmtKind::Print(e) => {
                let (text, v) = trace_expr(e, &env)?;
                items.push(match &e.kind {
                    ExprKind::Var(x) => format!("print {x}={v}"),
                    ExprKind::Int(_) => format!("print {v}={v}"),
                    _ => format!("print {text}"),
                });
            }
            _ => return None,
        }
    }
    Some(items.join(", "))
}

/// Steps a generated program may take (far above what counted loops of `max_loop_iters` need).
const GEN_LIMITS: Limits = Limits { max_steps: 2_000 };
const MAX_ATTEMPTS: usize = 64;
const NAMES: &[&str] = &[
    "a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "m", "n", "p", "q", "r", "s", "t", "u",
    "v", "w", "x", "y", "z",
];

struct Gen<'a> {
    rng: &'a mut Rng,
    cfg: &'a ProgramConfig,
    /// Declared variables (all at top level) and whether they may be assigned (loop counters may not
    /// inside their loop).
    vars: Vec<String>,
    locked: Vec<String>,
}

impl Gen<'_> {
    fn chance(&mut self, p: f64) -> bool {
        self.rng.uniform() < p
    }

    fn pick<'s, T>(&mut self, xs: &'s [T]) -> &'s T {
        &xs[self.rng.below(xs.len())]
    }

    fn literal(&mut self) -> i64 {
        self.rng.below(self.cfg.max_literal as usize + 1) as i64
    }

    fn fresh_name(&mut self) -> Option<String> {
        let free: Vec<&str> = NAMES
            .iter()
            .copied()
            .filter(|n| !self.vars.iter().any(|v| v == n))
            .collect();
        if free.is_empty() {
            None
        } else {
            Some(self.pick(&free).to_string())
        }
    }

    fn leaf(&mut self) -> Expr {
        if !self.vars.is_empty() && self.chance(0.6) {
            let v = self.pick(&self.vars.clone()).clone();
            Expr::var(v)
        } else {
            Expr::int(self.literal())
        }
    }

    fn expr(&mut self, depth: usize) -> Expr {
        if depth == 0 || self.chance(0.35) {
            return self.leaf();
        }
        let op = *self.pick(&[
            BinOp::Add,
            BinOp::Add,
            BinOp::Sub,
            BinOp::Sub,
            BinOp::Mul,
            BinOp::Mul,
            BinOp::Div,
            BinOp::Rem,
        ]);
        let l = self.expr(depth - 1);
        let r = match op {
            // A positive literal divisor: never zero.
            BinOp::Div | BinOp::Rem => Expr::int(1 + self.rng.below(9) as i64),
            // Keep products small: one factor is a leaf.
            BinOp::Mul => self.leaf(),
            _ => self.expr(depth - 1),
        };
        Expr::binary(op, l, r)
    }

    fn condition(&mut self) -> Expr {
        let op = *self.pick(&[
            BinOp::Lt,
            BinOp::Le,
            BinOp::Gt,
            BinOp::Ge,
            BinOp::Eq,
            BinOp::Ne,
        ]);
        let l = if self.chance(0.3) {
            // Parity tests read naturally: `a % 2 == 0`.
            Expr::binary(
                BinOp::Rem,
                self.leaf(),
                Expr::int(2 + self.rng.below(2) as i64),
            )
        } else {
            self.expr(1)
        };
        let r = if op == BinOp::Eq || op == BinOp::Ne {
            Expr::int(self.rng.below(3) as i64)
        } else {
            self.leaf()
        };
        Expr::binary(op, l, r)
    }

    fn assignable(&mut self) -> Option<String> {
        let free: Vec<String> = self
            .vars
            .iter()
            .filter(|v| !self.locked.contains(v))
            .cloned()
            .collect();
        if free.is_empty() {
            None
        } else {
            Some(self.pick(&free).clone())
        }
    }

    /// An assignment (or, failing that, a print) for the inside of a block.
    fn simple(&mut self) -> Stmt {
        match self.assignable() {
            Some(name) if self.chance(0.8) => {
                let value = if self.chance(0.5) {
                    // Update in place: `s = s + i`.
                    let op = *self.pick(&[BinOp::Add, BinOp::Add, BinOp::Sub, BinOp::Mul]);
                    let r = if op == BinOp::Mul {
                        Expr::int(2 + self.rng.below(2) as i64)
                    } else {
                        self.leaf()
                    };
                    Expr::binary(op, Expr::var(name.clone()), r)
                } else {
                    self.expr(self.cfg.max_expr_depth.min(1))
                };
                Stmt::new(StmtKind::Assign { name, value })
            }
            _ => Stmt::new(StmtKind::Print(self.leaf())),
        }
    }

    fn body(&mut self) -> Vec<Stmt> {
        let n = 1 + self.rng.below(2);
        (0..n).map(|_| self.simple()).collect()
    }

    /// Top-level statements: usually one, two for a counted loop (`let i = 0;` then the loop).
    fn statement(&mut self, out: &mut Vec<Stmt>) {
        let roll = self.rng.below(10);
        if self.cfg.loops && roll < 2 {
            if let Some(counter) = self.fresh_name() {
                let n = 1 + self.rng.below(self.cfg.max_loop_iters as usize) as i64;
                out.push(Stmt::new(StmtKind::Let {
                    name: counter.clone(),
                    value: Expr::int(0),
                }));
                self.vars.push(counter.clone());
                self.locked.push(counter.clone());
                let mut body = self.body();
                self.locked.pop();
                let step = Expr::binary(BinOp::Add, Expr::var(counter.clone()), Expr::int(1));
                body.push(Stmt::new(StmtKind::Assign {
                    name: counter.clone(),
                    value: step,
                }));
                let cond = Expr::binary(BinOp::Lt, Expr::var(counter), Expr::int(n));
                out.push(Stmt::new(StmtKind::While { cond, body }));
                return;
            }
        }
        if self.cfg.branches && roll < 4 {
            let cond = self.condition();
            let then = self.body();
            let otherwise = if self.chance(0.6) {
                self.body()
            } else {
                Vec::new()
            };
            out.push(Stmt::new(StmtKind::If {
                cond,
                then,
                otherwise,
            }));
            return;
        }
        if roll < 7 {
            if let Some(name) = self.fresh_name() {
                let value = self.expr(self.cfg.max_expr_depth);
                out.push(Stmt::new(StmtKind::Let {
                    name: name.clone(),
                    value,
                }));
                self.vars.push(name);
                return;
            }
        }
        out.push(self.simple());
    }

    fn program(&mut self) -> Program {
        let mut stmts = Vec::new();
        // Always start from a declared variable with a literal value.
        let first = self.fresh_name().unwrap_or_else(|| "a".to_string());
        stmts.push(Stmt::new(StmtKind::Let {
            name: first.clone(),
            value: Expr::int(self.literal()),
        }));
        self.vars.push(first);
        let n = 1 + self.rng.below(self.cfg.max_stmts);
        for _ in 0..n {
            self.statement(&mut stmts);
        }
        if self.cfg.single_print {
            // Drop prints made inside blocks or at top level: the one answer is the final print.
            strip_prints(&mut stmts);
            let e = if self.chance(0.7) {
                Expr::var(self.pick(&self.vars.clone()).clone())
            } else {
                self.expr(1)
            };
            stmts.push(Stmt::new(StmtKind::Print(e)));
        } else {
            // One or two distinct variables.
            let mut names = self.vars.clone();
            self.rng.shuffle(&mut names);
            let k = (1 + self.rng.below(2)).min(names.len());
            for v in names.into_iter().take(k) {
                stmts.push(Stmt::new(StmtKind::Print(Expr::var(v))));
            }
        }
        Program { stmts }
    }
}

/// Remove every print statement; a block left empty gets no replacement (empty blocks are valid).
fn strip_prints(stmts: &mut Vec<Stmt>) {
    stmts.retain(|s| !matches!(s.kind, StmtKind::Print(_)));
    for s in stmts.iter_mut() {
        match &mut s.kind {
            StmtKind::If {
                then, otherwise, ..
            } => {
                strip_prints(then);
                strip_prints(otherwise);
            }
            StmtKind::While { body, .. } => strip_prints(body),
            _ => {}
        }
    }
}

/// Draw one valid program from `rng`. The config must be valid ([`ProgramConfig::validate`]); an
/// invalid one is clamped to something usable rather than causing a panic.
pub fn generate(rng: &mut Rng, cfg: &ProgramConfig) -> GeneratedProgram {
    let cfg = ProgramConfig {
        max_stmts: cfg.max_stmts.clamp(1, 64),
        max_expr_depth: cfg.max_expr_depth.min(8),
        max_literal: cfg.max_literal.clamp(1, 1_000_000),
        max_loop_iters: cfg.max_loop_iters.clamp(1, 100),
        max_abs_value: cfg.max_abs_value.max(cfg.max_literal.clamp(1, 1_000_000)),
        ..cfg.clone()
    };
    for _ in 0..MAX_ATTEMPTS {
        let program = Gen {
            rng,
            cfg: &cfg,
            vars: Vec::new(),
            locked: Vec::new(),
        }
        .program();
        let source = program.to_string();
        // Run the printed text, not the tree, so the record is what `lang::run` says about it.
        match lang::run_with(&source, &GEN_LIMITS) {
            Ok(ex)
                if !ex.values.is_empty()
                    && ex
                        .values
                        .iter()
                        .all(|v| v.unsigned_abs() <= cfg.max_abs_value as u64) =>
            {
                return GeneratedProgram {
                    source,
                    output: ex.output,
                };
            }
            _ => continue,
        }
    }
    // Practically unreachable with sane settings; still a valid program.
    let v = rng.below(cfg.max_literal as usize + 1);
    GeneratedProgram {
        source: format!("let a = {v};\nprint a;\n"),
        output: v.to_string(),
    }
}
