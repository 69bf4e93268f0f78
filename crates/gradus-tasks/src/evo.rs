//! Program synthesis toward a hidden target behaviour in the tiny [`lang`](super::lang) language:
//! the objective, the counting evaluator and the random-mutation GA of `gradus lab evoprompting`
//! (EvoPrompting, Chen, Dohan & So 2023, arXiv 2302.14838; RESEARCH §3.11, "toolkit miniature").
//!
//! **Genomes** are straight-line programs over one input variable `x`: zero or more
//! `let v = expr;` (v from [`VAR_NAMES`]) and a final `print expr;`, with `+ - * / %`, literals
//! `0..=max_literal` and parentheses. Any program of the language is accepted by the evaluator
//! (an LM may write anything); the GA's operators only build genomes of that shape.
//!
//! **The task** ([`EvoTarget`]): a hidden genome of `target_lets` lets, drawn from a seed, and its
//! outputs on the inputs `x = 1, 2, …, num_inputs`. A candidate runs once per input (with
//! `let x = <input>;` in front, under the interpreter's step limit); its output is the last value it
//! prints. **Fitness** (EvoPrompting scores a child by error × size; here graded so that evolution
//! has a slope to climb):
//! ```text
//! closeness = (1/N) Σ_i 1 / (1 + ln(1 + |y_i − t_i|))   (1 when every output matches)
//! fitness   = max(0, closeness − size_penalty · tokens)
//! ```
//! The logarithm keeps the slope alive far from the target (an output off by 50 still earns 0.20,
//! off by 1 earns 0.59): with 1/(1 + |d|) every early candidate scored ≈ 0 and no search moved.
//! with `tokens` the candidate's length in [`render`]ed words. A program that does not parse, fails
//! on any input (division by zero, overflow, undefined variable, step limit) or prints nothing has
//! fitness 0, never a panic. `matched` (exact outputs) and `solved` (all exact) are reported too.
//!
//! **The evaluator** ([`Evaluator`]) counts every call against a budget shared by all arms of a
//! comparison and keeps best-so-far per call (as [`crate::ga::Oracle`] does for Ehrlich functions).
//!
//! **The GA baseline** ([`ga_children`], [`survive`]): parents drawn uniformly from the population,
//! one-point crossover of their statement lists (probability `crossover_prob` when k ≥ 2) and 1 to
//! `max_mutations` random AST mutations ([`mutate`]: change an operator, a literal or a leaf, replace
//! or wrap a subexpression, hoist an operand, insert or delete a `let`); the same survival rule as
//! EvoPrompting: children below the threshold are dropped, population ← top P of
//! (population ∪ children).

use std::collections::HashSet;

use gradus_tensor::rng::Rng;
use gradus_tensor::{Error, Result};
use serde::{Deserialize, Serialize};

use super::lang::{self, BinOp, Expr, ExprKind, Limits, Program, Stmt, StmtKind};

/// The input variable every genome reads.
pub const INPUT_VAR: &str = "x";
/// Names a genome's `let`s take, in order of first use.
pub const VAR_NAMES: [&str; 6] = ["a", "b", "c", "d", "e", "g"];
/// The operators genomes use.
pub const OPS: [BinOp; 5] = [BinOp::Add, BinOp::Sub, BinOp::Mul, BinOp::Div, BinOp::Rem];
/// Deepest expression the GA's mutations build (a deeper result is redrawn).
pub const MAX_GENOME_DEPTH: usize = 5;

/// `[task]`: the target family and the fitness.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EvoTaskConfig {
    /// Test inputs x = 1..=num_inputs (0 left out: it would make every `/ x` a division by zero).
    pub num_inputs: usize,
    /// `let`s of the hidden target program.
    pub target_lets: usize,
    /// Most `let`s a GA genome may have (at most 6, the size of [`VAR_NAMES`]).
    pub max_lets: usize,
    /// Literals are in `0..=max_literal` (each is one word of the LM's vocabulary).
    pub max_literal: i64,
    /// Deepest operator nesting of a random expression (target, initial population, new subtrees).
    pub max_expr_depth: usize,
    /// Targets with an output beyond this magnitude are redrawn.
    pub max_abs_value: i64,
    /// Fitness lost per word of the program (EvoPrompting's size term).
    pub size_penalty: f64,
    /// Interpreter step limit per input.
    pub max_steps: u64,
}

impl Default for EvoTaskConfig {
    fn default() -> Self {
        Self {
            num_inputs: 8,
            target_lets: 2,
            max_lets: 4,
            max_literal: 9,
            max_expr_depth: 2,
            max_abs_value: 99,
            size_penalty: 0.001,
            max_steps: 1000,
        }
    }
}

impl EvoTaskConfig {
    /// Checks every field; errors name the field under `prefix` (e.g. `task`).
    pub fn validate_at(&self, prefix: &str) -> Result<()> {
        let f = |n: &str| format!("{prefix}.{n}");
        if !(1..=64).contains(&self.num_inputs) {
            return Err(Error::config(f("num_inputs"), "must be in 1..=64"));
        }
        if self.max_lets > VAR_NAMES.len() {
            return Err(Error::config(
                f("max_lets"),
                format!("must be at most {} (the variable names)", VAR_NAMES.len()),
            ));
        }
        if self.target_lets > self.max_lets {
            return Err(Error::config(
                f("target_lets"),
                format!(
                    "{} lets, but genomes may have at most max_lets = {}",
                    self.target_lets, self.max_lets
                ),
            ));
        }
        if !(1..=99).contains(&self.max_literal) {
            return Err(Error::config(f("max_literal"), "must be in 1..=99"));
        }
        if !(1..=3).contains(&self.max_expr_depth) {
            return Err(Error::config(f("max_expr_depth"), "must be in 1..=3"));
        }
        if self.max_abs_value < 10 {
            return Err(Error::config(f("max_abs_value"), "must be at least 10"));
        }
        if !(self.size_penalty >= 0.0 && self.size_penalty < 0.1) {
            return Err(Error::config(f("size_penalty"), "must be in [0, 0.1)"));
        }
        if !(10..=1_000_000).contains(&self.max_steps) {
            return Err(Error::config(f("max_steps"), "must be in 10..=1000000"));
        }
        Ok(())
    }

    /// The test inputs, 1..=num_inputs.
    pub fn inputs(&self) -> Vec<i64> {
        (1..=self.num_inputs as i64).collect()
    }

    /// Every word a rendered genome can hold: keywords, punctuation, operators, variables and
    /// literals (the LM's program vocabulary).
    pub fn program_words(&self) -> Vec<String> {
        let mut w: Vec<String> = ["let", "print", "=", ";", "(", ")", INPUT_VAR]
            .iter()
            .map(|s| s.to_string())
            .collect();
        w.extend(OPS.iter().map(|o| o.symbol().to_string()));
        w.extend(VAR_NAMES.iter().map(|s| s.to_string()));
        w.extend((0..=self.max_literal).map(|v| v.to_string()));
        w
    }
}

// ------------------------------------------------------------------------------- rendering

/// `src` with one space between tokens and none inside one (line breaks dropped): the form the
/// LM reads and writes, and the key under which programs are compared. Words are runs of letters,
/// digits and `_`; two-character operators stay whole; every other character is its own word.
pub fn spaced(src: &str) -> String {
    let cs: Vec<char> = src.chars().collect();
    let mut words: Vec<String> = Vec::new();
    let mut i = 0;
    while i < cs.len() {
        let c = cs[i];
        if c.is_whitespace() {
            i += 1;
        } else if c.is_alphanumeric() || c == '_' {
            let s = i;
            while i < cs.len() && (cs[i].is_alphanumeric() || cs[i] == '_') {
                i += 1;
            }
            words.push(cs[s..i].iter().collect());
        } else {
            let two: String = cs[i..(i + 2).min(cs.len())].iter().collect();
            if ["==", "!=", "<=", ">=", "&&", "||"].contains(&two.as_str()) {
                words.push(two);
                i += 2;
            } else {
                words.push(c.to_string());
                i += 1;
            }
        }
    }
    words.join(" ")
}

/// A program in the LM's form: the printer's canonical text, [`spaced`].
pub fn render(p: &Program) -> String {
    spaced(&p.to_string())
}

// ------------------------------------------------------------------------------- fitness

/// A candidate's score on the task.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Fitness {
    /// max(0, closeness − size_penalty · size); 0 on any error.
    pub fitness: f64,
    /// Mean 1/(1 + ln(1 + |y − t|)) over the inputs (0 on error).
    pub closeness: f64,
    /// Inputs whose output is exactly the target's.
    pub matched: usize,
    /// Words of the [`spaced`] program.
    pub size: usize,
    /// Why the fitness is 0 (parse or run error, no output), if it is for that reason.
    pub error: Option<String>,
}

impl Fitness {
    fn failed(size: usize, why: String) -> Self {
        Self {
            fitness: 0.0,
            closeness: 0.0,
            matched: 0,
            size,
            error: Some(why),
        }
    }

    /// Every output matched.
    pub fn solved(&self, num_inputs: usize) -> bool {
        self.error.is_none() && self.matched == num_inputs
    }
}

/// Runs `p` on input `x`: its last printed value.
fn run_on(p: &Program, x: i64, max_steps: u64) -> std::result::Result<i64, String> {
    let mut stmts = Vec::with_capacity(p.stmts.len() + 1);
    stmts.push(Stmt::new(StmtKind::Let {
        name: INPUT_VAR.into(),
        value: Expr::int(x),
    }));
    stmts.extend(p.stmts.iter().cloned());
    let exec = Program { stmts }
        .execute(&Limits { max_steps })
        .map_err(|e| format!("x = {x}: {}", e.kind))?;
    exec.values
        .last()
        .copied()
        .ok_or_else(|| "prints nothing".to_string())
}

/// The fitness of program `p` against `outputs` on `inputs` (module docs).
pub fn fitness_of(cfg: &EvoTaskConfig, inputs: &[i64], outputs: &[i64], p: &Program) -> Fitness {
    let size = render(p).split(' ').count();
    let mut closeness = 0.0;
    let mut matched = 0;
    for (&x, &t) in inputs.iter().zip(outputs) {
        match run_on(p, x, cfg.max_steps) {
            Ok(y) => {
                let d = (y as i128 - t as i128).unsigned_abs() as f64;
                closeness += 1.0 / (1.0 + d.ln_1p());
                matched += (y == t) as usize;
            }
            Err(e) => return Fitness::failed(size, e),
        }
    }
    closeness /= inputs.len().max(1) as f64;
    Fitness {
        fitness: (closeness - cfg.size_penalty * size as f64).max(0.0),
        closeness,
        matched,
        size,
        error: None,
    }
}

/// The hidden target of a search: a program and its outputs on the test inputs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvoTarget {
    /// The hidden program, [`render`]ed.
    pub source: String,
    pub inputs: Vec<i64>,
    pub outputs: Vec<i64>,
}

impl EvoTarget {
    /// Draws a target: a random genome of `target_lets` lets whose outputs all exist, stay within
    /// `max_abs_value` and take at least min(3, N) distinct values (so no constant wins).
    pub fn draw(cfg: &EvoTaskConfig, rng: &mut Rng) -> Result<Self> {
        cfg.validate_at("task")?;
        let inputs = cfg.inputs();
        let want = inputs.len().min(3);
        for _ in 0..100_000 {
            let p = random_genome(cfg, cfg.target_lets, rng);
            let outs: std::result::Result<Vec<i64>, String> = inputs
                .iter()
                .map(|&x| run_on(&p, x, cfg.max_steps))
                .collect();
            let Ok(outputs) = outs else { continue };
            if outputs.iter().any(|v| v.abs() > cfg.max_abs_value) {
                continue;
            }
            if outputs.iter().collect::<HashSet<_>>().len() < want {
                continue;
            }
            return Ok(Self {
                source: render(&p),
                inputs,
                outputs,
            });
        }
        Err(Error::config(
            "task.max_abs_value",
            "no target program found within the bounds after 100000 draws; raise max_abs_value or lower max_expr_depth",
        ))
    }

    /// The fitness of candidate source text (any program of the language; see module docs).
    pub fn score(&self, cfg: &EvoTaskConfig, src: &str) -> Fitness {
        match lang::parse(src) {
            Ok(p) => fitness_of(cfg, &self.inputs, &self.outputs, &p),
            Err(e) => Fitness::failed(spaced(src).split(' ').count(), format!("parse: {e}")),
        }
    }
}

// ------------------------------------------------------------------------------- the evaluator

/// Counts fitness evaluations against a budget and keeps best-so-far per call.
pub struct Evaluator<'a> {
    cfg: &'a EvoTaskConfig,
    target: &'a EvoTarget,
    budget: u64,
    calls: u64,
    best: f64,
    trace: Vec<(u64, f64)>,
}

impl<'a> Evaluator<'a> {
    pub fn new(cfg: &'a EvoTaskConfig, target: &'a EvoTarget, budget: u64) -> Self {
        Self {
            cfg,
            target,
            budget,
            calls: 0,
            best: 0.0,
            trace: Vec::new(),
        }
    }

    /// Scores `src` (one call), or None once the budget is spent (nothing is counted then).
    pub fn evaluate(&mut self, src: &str) -> Option<Fitness> {
        if self.calls >= self.budget {
            return None;
        }
        self.calls += 1;
        let f = self.target.score(self.cfg, src);
        if f.fitness > self.best || self.trace.is_empty() {
            self.best = self.best.max(f.fitness);
            self.trace.push((self.calls, self.best));
        }
        Some(f)
    }

    pub fn calls(&self) -> u64 {
        self.calls
    }
    pub fn remaining(&self) -> u64 {
        self.budget.saturating_sub(self.calls)
    }
    pub fn exhausted(&self) -> bool {
        self.calls >= self.budget
    }
    /// Best fitness so far (0 before any call).
    pub fn best(&self) -> f64 {
        self.best
    }
    /// (calls, best so far) at the first call and at every improvement.
    pub fn trace(&self) -> &[(u64, f64)] {
        &self.trace
    }
    /// Restores a counter saved by an earlier run (resume).
    pub fn restore(&mut self, calls: u64, trace: Vec<(u64, f64)>) {
        self.calls = calls;
        self.best = trace.last().map_or(0.0, |t| t.1);
        self.trace = trace;
    }
}

/// Best fitness after `calls` evaluations of a best-so-far trace (0 before the first).
pub fn best_after(trace: &[(u64, f64)], calls: u64) -> f64 {
    trace
        .iter()
        .take_while(|t| t.0 <= calls)
        .last()
        .map_or(0.0, |t| t.1)
}

// ------------------------------------------------------------------------------- survival

/// A member of a population: a [`render`]ed program and its fitness.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Member {
    pub source: String,
    pub fitness: f64,
}

/// EvoPrompting's survival: children below `threshold` are dropped, then the top `size` of
/// population ∪ children by fitness (ties: shorter source, then lexicographic), each program
/// once (a child equal to a member is the same program).
pub fn survive(
    population: &[Member],
    children: &[Member],
    threshold: f64,
    size: usize,
) -> Vec<Member> {
    let mut seen = HashSet::new();
    let mut all: Vec<Member> = population
        .iter()
        .chain(children.iter().filter(|c| c.fitness >= threshold))
        .filter(|m| seen.insert(m.source.clone()))
        .cloned()
        .collect();
    all.sort_by(|a, b| {
        b.fitness
            .total_cmp(&a.fitness)
            .then(a.source.len().cmp(&b.source.len()))
            .then(a.source.cmp(&b.source))
    });
    all.truncate(size);
    all
}

/// `k` distinct members drawn uniformly (all of them when there are at most `k`), in the order
/// drawn.
pub fn sample_parents(population: &[Member], k: usize, rng: &mut Rng) -> Vec<Member> {
    let mut idx: Vec<usize> = (0..population.len()).collect();
    rng.shuffle(&mut idx);
    idx.truncate(k);
    idx.into_iter().map(|i| population[i].clone()).collect()
}

// ------------------------------------------------------------------------------- random genomes

fn random_leaf(vars: &[String], cfg: &EvoTaskConfig, rng: &mut Rng) -> Expr {
    if rng.uniform() < 0.6 {
        Expr::var(vars[rng.below(vars.len())].clone())
    } else {
        Expr::int(rng.below(cfg.max_literal as usize + 1) as i64)
    }
}

fn random_op(rng: &mut Rng) -> BinOp {
    // Add, Sub and Mul twice as often as Div and Rem.
    const W: [BinOp; 8] = [
        BinOp::Add,
        BinOp::Add,
        BinOp::Sub,
        BinOp::Sub,
        BinOp::Mul,
        BinOp::Mul,
        BinOp::Div,
        BinOp::Rem,
    ];
    W[rng.below(W.len())]
}

/// A random expression over `vars` and literals, at most `depth` operators deep.
pub fn random_expr(vars: &[String], depth: usize, cfg: &EvoTaskConfig, rng: &mut Rng) -> Expr {
    if depth == 0 || rng.uniform() < 0.3 {
        return random_leaf(vars, cfg, rng);
    }
    let op = random_op(rng);
    let l = random_expr(vars, depth - 1, cfg, rng);
    let r = random_expr(vars, depth - 1, cfg, rng);
    Expr::binary(op, l, r)
}

/// A random genome with `lets` lets (each may use x and the earlier ones) and a print.
pub fn random_genome(cfg: &EvoTaskConfig, lets: usize, rng: &mut Rng) -> Program {
    let mut vars = vec![INPUT_VAR.to_string()];
    let mut stmts = Vec::new();
    for name in VAR_NAMES.iter().take(lets.min(VAR_NAMES.len())) {
        let value = random_expr(&vars, cfg.max_expr_depth, cfg, rng);
        stmts.push(Stmt::new(StmtKind::Let {
            name: name.to_string(),
            value,
        }));
        vars.push(name.to_string());
    }
    let value = random_expr(&vars, cfg.max_expr_depth, cfg, rng);
    stmts.push(Stmt::new(StmtKind::Print(value)));
    Program { stmts }
}

// ------------------------------------------------------------------------------- AST mutation

fn depth(e: &Expr) -> usize {
    match &e.kind {
        ExprKind::Int(_) | ExprKind::Var(_) => 0,
        ExprKind::Unary(_, x) => 1 + depth(x),
        ExprKind::Binary(_, l, r) => 1 + depth(l).max(depth(r)),
    }
}

fn count_nodes(e: &Expr, pred: &dyn Fn(&Expr) -> bool) -> usize {
    let here = pred(e) as usize;
    here + match &e.kind {
        ExprKind::Int(_) | ExprKind::Var(_) => 0,
        ExprKind::Unary(_, x) => count_nodes(x, pred),
        ExprKind::Binary(_, l, r) => count_nodes(l, pred) + count_nodes(r, pred),
    }
}

/// The `n`-th node (pre-order) satisfying `pred`.
fn nth_node<'e>(
    e: &'e mut Expr,
    n: &mut usize,
    pred: &dyn Fn(&Expr) -> bool,
) -> Option<&'e mut Expr> {
    if pred(e) {
        if *n == 0 {
            return Some(e);
        }
        *n -= 1;
    }
    match &mut e.kind {
        ExprKind::Int(_) | ExprKind::Var(_) => None,
        ExprKind::Unary(_, x) => nth_node(x, n, pred),
        ExprKind::Binary(_, l, r) => {
            if let Some(x) = nth_node(l, n, pred) {
                return Some(x);
            }
            nth_node(r, n, pred)
        }
    }
}

fn stmt_expr(s: &Stmt) -> Option<&Expr> {
    match &s.kind {
        StmtKind::Let { value, .. } | StmtKind::Assign { value, .. } | StmtKind::Print(value) => {
            Some(value)
        }
        _ => None,
    }
}

fn stmt_expr_mut(s: &mut Stmt) -> Option<&mut Expr> {
    match &mut s.kind {
        StmtKind::Let { value, .. } | StmtKind::Assign { value, .. } | StmtKind::Print(value) => {
            Some(value)
        }
        _ => None,
    }
}

/// Variables in scope before statement `i` of a straight-line genome.
fn scope_at(stmts: &[Stmt], i: usize) -> Vec<String> {
    let mut vars = vec![INPUT_VAR.to_string()];
    for s in &stmts[..i] {
        if let StmtKind::Let { name, .. } = &s.kind {
            if !vars.contains(name) {
                vars.push(name.clone());
            }
        }
    }
    vars
}

/// Picks a node satisfying `pred` uniformly over the whole genome: (statement, node index).
fn pick_node(
    stmts: &[Stmt],
    pred: &dyn Fn(&Expr) -> bool,
    rng: &mut Rng,
) -> Option<(usize, usize)> {
    let counts: Vec<usize> = stmts
        .iter()
        .map(|s| stmt_expr(s).map_or(0, |e| count_nodes(e, pred)))
        .collect();
    let total: usize = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let mut k = rng.below(total);
    for (i, c) in counts.iter().enumerate() {
        if k < *c {
            return Some((i, k));
        }
        k -= c;
    }
    None
}

/// Applies `f` to a node satisfying `pred`, chosen uniformly; false when there is none.
fn edit_node(
    stmts: &mut [Stmt],
    pred: &dyn Fn(&Expr) -> bool,
    rng: &mut Rng,
    f: &mut dyn FnMut(&mut Expr, &[String], &mut Rng),
) -> bool {
    let Some((i, mut k)) = pick_node(stmts, pred, rng) else {
        return false;
    };
    let vars = scope_at(stmts, i);
    let Some(e) = stmt_expr_mut(&mut stmts[i]) else {
        return false;
    };
    match nth_node(e, &mut k, pred) {
        Some(node) => {
            f(node, &vars, rng);
            true
        }
        None => false,
    }
}

fn lets(stmts: &[Stmt]) -> usize {
    stmts
        .iter()
        .filter(|s| matches!(s.kind, StmtKind::Let { .. }))
        .count()
}

/// Makes a straight-line genome well scoped: every variable read that is not in scope becomes
/// `x`; a genome without a `print` gets `print <last let or x>;` appended.
pub fn repair(p: &mut Program) {
    fn fix(e: &mut Expr, vars: &[String]) {
        match &mut e.kind {
            ExprKind::Var(v) if !vars.contains(v) => *v = INPUT_VAR.to_string(),
            ExprKind::Unary(_, x) => fix(x, vars),
            ExprKind::Binary(_, l, r) => {
                fix(l, vars);
                fix(r, vars);
            }
            _ => {}
        }
    }
    for i in 0..p.stmts.len() {
        let vars = scope_at(&p.stmts, i);
        if let Some(e) = stmt_expr_mut(&mut p.stmts[i]) {
            fix(e, &vars);
        }
    }
    if !p.stmts.iter().any(|s| matches!(s.kind, StmtKind::Print(_))) {
        let last = scope_at(&p.stmts, p.stmts.len()).pop().unwrap_or_default();
        p.stmts.push(Stmt::new(StmtKind::Print(Expr::var(last))));
    }
}

/// The kinds of random mutation ([`mutate`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MutationKind {
    /// Another operator at a binary node.
    Operator,
    /// A literal ±1 or redrawn.
    Literal,
    /// A leaf replaced by another variable in scope or a literal.
    Leaf,
    /// A subexpression replaced by a fresh random one.
    Subtree,
    /// A subexpression e becomes `e op leaf` or `leaf op e`.
    Wrap,
    /// A binary node replaced by one of its operands.
    Hoist,
    /// A new `let` (a fresh name) inserted; a later leaf may read it.
    InsertLet,
    /// A `let` removed (its readers repaired).
    DeleteLet,
}

/// Every [`MutationKind`].
pub const MUTATIONS: [MutationKind; 8] = [
    MutationKind::Operator,
    MutationKind::Literal,
    MutationKind::Leaf,
    MutationKind::Subtree,
    MutationKind::Wrap,
    MutationKind::Hoist,
    MutationKind::InsertLet,
    MutationKind::DeleteLet,
];

/// Applies one mutation of `kind` in place; false when it does not apply (e.g. no literal).
pub fn apply_mutation(
    p: &mut Program,
    kind: MutationKind,
    cfg: &EvoTaskConfig,
    rng: &mut Rng,
) -> bool {
    let is_bin = |e: &Expr| matches!(e.kind, ExprKind::Binary(..));
    let is_int = |e: &Expr| matches!(e.kind, ExprKind::Int(_));
    let is_leaf = |e: &Expr| matches!(e.kind, ExprKind::Int(_) | ExprKind::Var(_));
    let any = |_: &Expr| true;
    let max_lit = cfg.max_literal;
    let ok = match kind {
        MutationKind::Operator => edit_node(&mut p.stmts, &is_bin, rng, &mut |e, _, rng| {
            if let ExprKind::Binary(op, _, _) = &mut e.kind {
                let others: Vec<BinOp> = OPS.iter().copied().filter(|o| o != op).collect();
                *op = others[rng.below(others.len())];
            }
        }),
        MutationKind::Literal => edit_node(&mut p.stmts, &is_int, rng, &mut |e, _, rng| {
            if let ExprKind::Int(v) = &mut e.kind {
                *v = if rng.uniform() < 0.5 {
                    let step = if rng.uniform() < 0.5 { -1 } else { 1 };
                    (*v + step).clamp(0, max_lit)
                } else {
                    rng.below(max_lit as usize + 1) as i64
                };
            }
        }),
        MutationKind::Leaf => edit_node(&mut p.stmts, &is_leaf, rng, &mut |e, vars, rng| {
            *e = random_leaf(vars, cfg, rng);
        }),
        MutationKind::Subtree => edit_node(&mut p.stmts, &any, rng, &mut |e, vars, rng| {
            *e = random_expr(vars, 1 + rng.below(cfg.max_expr_depth), cfg, rng);
        }),
        MutationKind::Wrap => edit_node(&mut p.stmts, &any, rng, &mut |e, vars, rng| {
            let leaf = random_leaf(vars, cfg, rng);
            let op = random_op(rng);
            let inner = e.clone();
            *e = if rng.uniform() < 0.5 {
                Expr::binary(op, inner, leaf)
            } else {
                Expr::binary(op, leaf, inner)
            };
        }),
        MutationKind::Hoist => edit_node(&mut p.stmts, &is_bin, rng, &mut |e, _, rng| {
            if let ExprKind::Binary(_, l, r) = &e.kind {
                let keep = if rng.uniform() < 0.5 { l } else { r };
                *e = (**keep).clone();
            }
        }),
        MutationKind::InsertLet => {
            let n = lets(&p.stmts);
            let used: HashSet<String> = p
                .stmts
                .iter()
                .filter_map(|s| match &s.kind {
                    StmtKind::Let { name, .. } => Some(name.clone()),
                    _ => None,
                })
                .collect();
            let fresh = VAR_NAMES.iter().find(|v| !used.contains(**v));
            match fresh {
                Some(name) if n < cfg.max_lets => {
                    // Before any statement up to the print.
                    let last = p.stmts.len().saturating_sub(1);
                    let at = rng.below(last + 1);
                    let vars = scope_at(&p.stmts, at);
                    let value = random_expr(&vars, cfg.max_expr_depth, cfg, rng);
                    p.stmts.insert(
                        at,
                        Stmt::new(StmtKind::Let {
                            name: name.to_string(),
                            value,
                        }),
                    );
                    // Often a later leaf reads the new variable.
                    if rng.uniform() < 0.7 {
                        let later = &mut p.stmts[at + 1..];
                        let var = name.to_string();
                        edit_node(later, &is_leaf, rng, &mut |e, _, _| {
                            *e = Expr::var(var.clone());
                        });
                    }
                    true
                }
                _ => false,
            }
        }
        MutationKind::DeleteLet => {
            let idx: Vec<usize> = p
                .stmts
                .iter()
                .enumerate()
                .filter(|(_, s)| matches!(s.kind, StmtKind::Let { .. }))
                .map(|(i, _)| i)
                .collect();
            if idx.is_empty() {
                false
            } else {
                p.stmts.remove(idx[rng.below(idx.len())]);
                true
            }
        }
    };
    repair(p);
    ok
}

/// One random mutation that applies and keeps every expression within [`MAX_GENOME_DEPTH`]
/// (up to 20 tries; the parent unchanged if none does).
pub fn mutate(p: &Program, cfg: &EvoTaskConfig, rng: &mut Rng) -> Program {
    for _ in 0..20 {
        let mut c = p.clone();
        let kind = MUTATIONS[rng.below(MUTATIONS.len())];
        if apply_mutation(&mut c, kind, cfg, rng)
            && c.stmts
                .iter()
                .filter_map(stmt_expr)
                .all(|e| depth(e) <= MAX_GENOME_DEPTH)
        {
            return c;
        }
    }
    p.clone()
}

/// One-point crossover of two straight-line genomes: the first `i` lets of `a`, then `b`'s
/// statements from its `j`-th let on (its print included), at most `max_lets` lets; then
/// [`repair`]ed.
pub fn crossover(a: &Program, b: &Program, cfg: &EvoTaskConfig, rng: &mut Rng) -> Program {
    let lets_of = |p: &Program| -> Vec<Stmt> {
        p.stmts
            .iter()
            .filter(|s| matches!(s.kind, StmtKind::Let { .. }))
            .cloned()
            .collect()
    };
    let (la, lb) = (lets_of(a), lets_of(b));
    let i = rng.below(la.len() + 1);
    let j = rng.below(lb.len() + 1);
    let mut stmts: Vec<Stmt> = la[..i].to_vec();
    stmts.extend(lb[j..].iter().cloned());
    stmts.truncate(cfg.max_lets);
    if let Some(pr) = b
        .stmts
        .iter()
        .rev()
        .find(|s| matches!(s.kind, StmtKind::Print(_)))
    {
        stmts.push(pr.clone());
    }
    let mut c = Program { stmts };
    repair(&mut c);
    c
}

/// `[ga]`: the random-mutation operator of the GA baseline.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EvoGaConfig {
    /// Probability that a child is a crossover of its parents (when there are two or more).
    pub crossover_prob: f64,
    /// Each child gets 1..=max_mutations random mutations.
    pub max_mutations: usize,
}

impl Default for EvoGaConfig {
    fn default() -> Self {
        Self {
            crossover_prob: 0.5,
            max_mutations: 2,
        }
    }
}

impl EvoGaConfig {
    pub fn validate_at(&self, prefix: &str) -> Result<()> {
        if !(0.0..=1.0).contains(&self.crossover_prob) {
            return Err(Error::config(
                format!("{prefix}.crossover_prob"),
                "must be in [0, 1]",
            ));
        }
        if !(1..=10).contains(&self.max_mutations) {
            return Err(Error::config(
                format!("{prefix}.max_mutations"),
                "must be in 1..=10",
            ));
        }
        Ok(())
    }
}

/// A child of `parents` by the GA's random operators (crossover of the first two, then
/// mutations), [`render`]ed. Parents that do not parse are treated as `print x;`.
pub fn ga_child(
    parents: &[Member],
    task: &EvoTaskConfig,
    ga: &EvoGaConfig,
    rng: &mut Rng,
) -> String {
    let parse = |m: &Member| {
        lang::parse(&m.source).unwrap_or_else(|_| Program {
            stmts: vec![Stmt::new(StmtKind::Print(Expr::var(INPUT_VAR)))],
        })
    };
    let mut c = match parents {
        [] => random_genome(task, 0, rng),
        [a] => parse(a),
        [a, b, ..] if rng.uniform() < ga.crossover_prob => {
            crossover(&parse(a), &parse(b), task, rng)
        }
        [a, ..] => parse(a),
    };
    let n = 1 + rng.below(ga.max_mutations);
    for _ in 0..n {
        c = mutate(&c, task, rng);
    }
    render(&c)
}

/// The GA's children of one round: `prompts` groups of `k` parents drawn uniformly, `per_prompt`
/// children each (the same shape as an EvoPrompting round).
pub fn ga_children(
    population: &[Member],
    prompts: usize,
    k: usize,
    per_prompt: usize,
    task: &EvoTaskConfig,
    ga: &EvoGaConfig,
    rng: &mut Rng,
) -> Vec<String> {
    let mut out = Vec::with_capacity(prompts * per_prompt);
    for _ in 0..prompts {
        let parents = sample_parents(population, k, rng);
        for _ in 0..per_prompt {
            out.push(ga_child(&parents, task, ga, rng));
        }
    }
    out
}
