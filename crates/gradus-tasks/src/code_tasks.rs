//! Programming tasks in the tiny language ([`lang`](super::lang)) with unit tests, the test
//! harness, natural-language feedback templated from the first failing test, and a bug generator:
//! the data of imitation learning from language feedback on code (ILF; Chen et al. 2023,
//! arXiv 2303.16749; Scheurer et al. 2023, arXiv 2303.16755; RESEARCH §3.10, "toolkit miniature":
//! feedback is templated from the failing test, the selector is the unit tests).
//!
//! - A [`CodeTask`] is a one-line English description (`multiply x by 3, then add 1`), a hidden
//!   gold program over input variables (`x`, or `x` and `y`) and test cases (inputs → the gold
//!   program's output). Four families ([`Family`]): two arithmetic steps on `x`, two inputs
//!   combined then one step, a branch on a comparison, and a counted loop.
//! - [`run_tests`] runs a candidate on every test: the inputs are bound on one header line
//!   (`let x = 3; let y = 5;`) put before the candidate, so the candidate's own lines keep their
//!   numbers; each test passes when the printed output equals the expected one. The report keeps
//!   what was printed, runtime errors with the candidate's line, syntax errors, and how often each
//!   line ran ([`lang::Execution::line_counts`]).
//! - [`feedback`] writes one deterministic message from the first failing test, e.g.
//!   `for x = 3 expected 10 but got 9`, `for x = 3, line 2 failed: undefined variable `q``,
//!   `line 2: syntax error: expected `;`, found `print``, with a note on execution counts when
//!   one explains the failure: `; line 2 ran 0 times` (a statement the test never reached) or
//!   `; line 3 ran 5 times, expected 4` (the first loop ran another number of times than the gold
//!   program's). More than three printed values are shown as the first three and the count, so
//!   no program can make a message long.
//! - [`mutate`] / [`buggy_program`]: one seeded bug in a program (a wrong operator, a constant off
//!   by one, a wrong variable) that fails at least one test: the "bad code" of the refiner's
//!   training documents (task, bad code, feedback → fixed code).

use std::collections::{BTreeMap, BTreeSet};

use gradus_tensor::rng::Rng;
use gradus_tensor::{Error, Result};
use serde::{Deserialize, Serialize};

use crate::lang::{self, BinOp, Expr, ExprKind, Limits, Program, Stmt, StmtKind};

// ------------------------------------------------------------------------------- config

/// The families of tasks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    /// `multiply x by 3, then add 1`: `let r = x * 3; r = r + 1; print r;`.
    TwoStep,
    /// `add x and y, then multiply by 2`: `let r = x + y; r = r * 2; print r;`.
    TwoInputs,
    /// `if x is greater than 4 print x plus 2, else print 7`: an `if`/`else`.
    Branch,
    /// `start from 2 and add 3, x times`: a counted `while` loop.
    Loop,
}

impl Family {
    /// Every family.
    pub const ALL: [Family; 4] = [
        Family::TwoStep,
        Family::TwoInputs,
        Family::Branch,
        Family::Loop,
    ];
}

/// How tasks are drawn and tested.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CodeTaskConfig {
    /// Test cases per task (distinct inputs).
    pub tests: usize,
    /// Inputs are drawn from `0..=max_input`.
    pub max_input: i64,
    /// Interpreter steps allowed per test (statements plus loop tests).
    pub max_steps: u64,
    /// The families tasks are drawn from (uniformly).
    pub families: Vec<Family>,
}

impl Default for CodeTaskConfig {
    fn default() -> Self {
        Self {
            tests: 4,
            max_input: 9,
            max_steps: 1000,
            families: Family::ALL.to_vec(),
        }
    }
}

impl CodeTaskConfig {
    /// Checks the settings; errors name the field under `prefix` (`tasks.tests`).
    pub fn validate_at(&self, prefix: &str) -> Result<()> {
        let f = |name: &str| format!("{prefix}.{name}");
        if self.tests == 0 {
            return Err(Error::config(
                f("tests"),
                "a task needs at least one test case",
            ));
        }
        if !(1..=99).contains(&self.max_input) {
            return Err(Error::config(f("max_input"), "must be in 1..=99"));
        }
        if self.tests as i64 > self.max_input + 1 {
            return Err(Error::config(
                f("tests"),
                format!(
                    "{} distinct test inputs cannot be drawn from 0..={} (raise max_input or lower tests)",
                    self.tests, self.max_input
                ),
            ));
        }
        if self.max_steps < 20 {
            return Err(Error::config(
                f("max_steps"),
                "at least 20 steps (the loop tasks need them)",
            ));
        }
        if self.families.is_empty() {
            return Err(Error::config(
                f("families"),
                "give at least one of two_step, two_inputs, branch, loop",
            ));
        }
        Ok(())
    }
}

// ------------------------------------------------------------------------------- tasks

/// One test: input values and the expected output (printed values joined by `\n`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestCase {
    /// One value per input variable of the task, in the task's order.
    pub inputs: Vec<i64>,
    pub expected: String,
}

/// A programming task with its hidden gold program and tests.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CodeTask {
    pub family: Family,
    /// One line of English, no line break.
    pub description: String,
    /// The gold program (canonical layout: [`lang::Program`]'s `Display`, ends with `\n`).
    pub gold: String,
    /// Input variable names.
    pub inputs: Vec<String>,
    pub tests: Vec<TestCase>,
    /// Interpreter steps allowed per test.
    pub max_steps: u64,
}

impl CodeTask {
    /// A task from its parts; the expected outputs are the gold program's. Errors when the gold
    /// program does not parse or fails on an input (naming the input).
    pub fn from_parts(
        family: Family,
        description: &str,
        gold: &str,
        inputs: &[&str],
        rows: &[Vec<i64>],
        max_steps: u64,
    ) -> Result<CodeTask> {
        let limits = Limits { max_steps };
        let names: Vec<String> = inputs.iter().map(|s| s.to_string()).collect();
        let mut tests = Vec::with_capacity(rows.len());
        for row in rows {
            if row.len() != names.len() {
                return Err(Error::msg(format!(
                    "task `{description}`: a test has {} values for {} inputs",
                    row.len(),
                    names.len()
                )));
            }
            let src = format!("{}{gold}", header(&names, row));
            let exec = lang::run_with(&src, &limits).map_err(|e| {
                Error::msg(format!(
                    "task `{description}`: the gold program fails for {}: {e}",
                    show_inputs(&names, row)
                ))
            })?;
            tests.push(TestCase {
                inputs: row.clone(),
                expected: exec.output,
            });
        }
        Ok(CodeTask {
            family,
            description: description.to_string(),
            gold: gold.to_string(),
            inputs: names,
            tests,
            max_steps,
        })
    }

    /// The prompt a policy writes a program for: `# task: <description>\n`.
    pub fn prompt(&self) -> String {
        format!("# task: {}\n", self.description)
    }

    /// The prompt a refiner fixes `program` from: the task, the program, the feedback, `# fix:`.
    pub fn refine_prompt(&self, program: &str, feedback: &str) -> String {
        let mut p = program.to_string();
        if !p.ends_with('\n') {
            p.push('\n');
        }
        format!(
            "# task: {}\n{p}# feedback: {feedback}\n# fix:\n",
            self.description
        )
    }
}

/// The one header line binding the inputs: `let x = 3; let y = 5;\n`.
pub fn header(names: &[String], values: &[i64]) -> String {
    let mut s = names
        .iter()
        .zip(values)
        .map(|(n, v)| format!("let {n} = {v};"))
        .collect::<Vec<_>>()
        .join(" ");
    s.push('\n');
    s
}

/// `x = 3` or `x = 3, y = 5`.
pub fn show_inputs(names: &[String], values: &[i64]) -> String {
    names
        .iter()
        .zip(values)
        .map(|(n, v)| format!("{n} = {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn op_symbol(op: BinOp) -> &'static str {
    op.symbol()
}

/// `add 3 to x` / `subtract 3 from x` / `multiply x by 3`.
fn first_step(op: BinOp, a: i64) -> String {
    match op {
        BinOp::Add => format!("add {a} to x"),
        BinOp::Sub => format!("subtract {a} from x"),
        _ => format!("multiply x by {a}"),
    }
}

/// `add 3` / `subtract 3` / `multiply by 3`.
fn then_step(op: BinOp, b: i64) -> String {
    match op {
        BinOp::Add => format!("add {b}"),
        BinOp::Sub => format!("subtract {b}"),
        _ => format!("multiply by {b}"),
    }
}

const ARITH: [BinOp; 3] = [BinOp::Add, BinOp::Sub, BinOp::Mul];

/// A random task of `cfg` (family, constants and test inputs drawn from `rng`).
pub fn sample_task(rng: &mut Rng, cfg: &CodeTaskConfig) -> Result<CodeTask> {
    cfg.validate_at("tasks")?;
    let family = cfg.families[rng.below(cfg.families.len())];
    let digit = |rng: &mut Rng, lo: i64| lo + rng.below((10 - lo) as usize) as i64;
    let (desc, gold, inputs): (String, String, Vec<&str>) = match family {
        Family::TwoStep => {
            let (o1, o2) = (ARITH[rng.below(3)], ARITH[rng.below(3)]);
            let (a, b) = (digit(rng, 1), digit(rng, 1));
            (
                format!("{}, then {}", first_step(o1, a), then_step(o2, b)),
                format!(
                    "let r = x {} {a};\nr = r {} {b};\nprint r;\n",
                    op_symbol(o1),
                    op_symbol(o2)
                ),
                vec!["x"],
            )
        }
        Family::TwoInputs => {
            let (o1, o2) = (ARITH[rng.below(3)], ARITH[rng.below(3)]);
            let a = digit(rng, 1);
            let first = match o1 {
                BinOp::Add => "add x and y",
                BinOp::Sub => "subtract y from x",
                _ => "multiply x and y",
            };
            (
                format!("{first}, then {}", then_step(o2, a)),
                format!(
                    "let r = x {} y;\nr = r {} {a};\nprint r;\n",
                    op_symbol(o1),
                    op_symbol(o2)
                ),
                vec!["x", "y"],
            )
        }
        Family::Branch => {
            let gt = rng.below(2) == 0;
            let a = digit(rng, 0);
            let op = ARITH[rng.below(3)];
            let (b, c) = (digit(rng, 1), digit(rng, 0));
            let word = match op {
                BinOp::Add => "plus",
                BinOp::Sub => "minus",
                _ => "times",
            };
            let (cmp_word, cmp) = if gt {
                ("greater than", ">")
            } else {
                ("less than", "<")
            };
            (
                format!("if x is {cmp_word} {a} print x {word} {b}, else print {c}"),
                format!(
                    "if x {cmp} {a} {{\n    print x {} {b};\n}} else {{\n    print {c};\n}}\n",
                    op_symbol(op)
                ),
                vec!["x"],
            )
        }
        Family::Loop => {
            let add = rng.below(2) == 0;
            let (a, b) = (digit(rng, 1), digit(rng, 0));
            (
                format!(
                    "start from {b} and {} {a}, x times",
                    if add { "add" } else { "subtract" }
                ),
                format!(
                    "let s = {b};\nlet i = 0;\nwhile i < x {{\n    s = s {} {a};\n    i = i + 1;\n}}\nprint s;\n",
                    if add { "+" } else { "-" }
                ),
                vec!["x"],
            )
        }
    };
    // Distinct input rows: a shuffled grid of 0..=max_input per input, the first `tests`.
    let m = cfg.max_input as usize + 1;
    let mut rows: Vec<Vec<i64>> = if inputs.len() == 1 {
        (0..m).map(|x| vec![x as i64]).collect()
    } else {
        (0..m * m)
            .map(|i| vec![(i / m) as i64, (i % m) as i64])
            .collect()
    };
    rng.shuffle(&mut rows);
    rows.truncate(cfg.tests);
    CodeTask::from_parts(family, &desc, &gold, &inputs, &rows, cfg.max_steps)
}

/// Which part of the task space a task belongs to (by a hash of its description, so the same
/// task is always in the same part whatever the seed).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CodeSplit {
    /// Tasks whose gold programs may be pretrained on (60% of the task space).
    Pretrain,
    /// Tasks the rounds train on (20%).
    Train,
    /// Held-out tasks, only ever measured on (20%).
    HeldOut,
}

/// The split of a task description: FNV-1a 64 of the text, mod 10: 0–1 held out, 2–3 train, the
/// rest pretraining.
pub fn split_of_description(description: &str) -> CodeSplit {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in description.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    match h % 10 {
        0 | 1 => CodeSplit::HeldOut,
        2 | 3 => CodeSplit::Train,
        _ => CodeSplit::Pretrain,
    }
}

/// `n` tasks with distinct descriptions in `split`, drawn from `rng`. Errors (naming `field`)
/// when the task space of `cfg` runs out first.
pub fn distinct_tasks(
    rng: &mut Rng,
    cfg: &CodeTaskConfig,
    split: CodeSplit,
    n: usize,
    field: &str,
) -> Result<Vec<CodeTask>> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::with_capacity(n);
    let mut tries = 0usize;
    while out.len() < n {
        tries += 1;
        if tries > 200 * n + 1000 {
            return Err(Error::config(
                field,
                format!(
                    "only {} distinct {split:?} tasks found after {tries} draws; ask for fewer or add families",
                    out.len()
                ),
            ));
        }
        let t = sample_task(rng, cfg)?;
        if split_of_description(&t.description) == split && seen.insert(t.description.clone()) {
            out.push(t);
        }
    }
    Ok(out)
}

// ------------------------------------------------------------------------------- harness

/// A program that does not parse: where and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyntaxFailure {
    pub line: usize,
    pub col: usize,
    pub message: String,
}

/// What one test did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TestOutcome {
    /// The output was the expected one.
    Pass,
    /// The program ran but printed `got` (values joined by `\n`); `line_counts`: how often each
    /// line of the candidate ran.
    Wrong {
        got: String,
        line_counts: BTreeMap<usize, u64>,
    },
    /// A runtime error at the candidate's `line` (division by zero, undefined variable, step
    /// limit, overflow).
    Error { line: usize, message: String },
}

/// Every test's outcome, or the syntax error that kept the program from running.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestReport {
    pub syntax: Option<SyntaxFailure>,
    /// One per test of the task (empty when the program does not parse).
    pub outcomes: Vec<TestOutcome>,
}

impl TestReport {
    /// Tests passed.
    pub fn passed(&self) -> usize {
        self.outcomes
            .iter()
            .filter(|o| matches!(o, TestOutcome::Pass))
            .count()
    }

    /// Whether the program parsed and passed every test.
    pub fn all_passed(&self) -> bool {
        self.syntax.is_none() && !self.outcomes.is_empty() && self.passed() == self.outcomes.len()
    }
}

/// Runs `program` on every test of `task` (module docs).
pub fn run_tests(task: &CodeTask, program: &str) -> TestReport {
    if let Err(e) = lang::parse(program) {
        return TestReport {
            syntax: Some(SyntaxFailure {
                line: e.line(),
                col: e.col(),
                message: e.kind.to_string(),
            }),
            outcomes: Vec::new(),
        };
    }
    let limits = Limits {
        max_steps: task.max_steps,
    };
    let outcomes = task
        .tests
        .iter()
        .map(|t| {
            let src = format!("{}{program}", header(&task.inputs, &t.inputs));
            match lang::run_with(&src, &limits) {
                Ok(exec) if exec.output == t.expected => TestOutcome::Pass,
                Ok(exec) => TestOutcome::Wrong {
                    got: exec.output,
                    // The header is line 1: the candidate's line n is line n + 1.
                    line_counts: exec
                        .line_counts
                        .into_iter()
                        .filter(|(l, _)| *l >= 2)
                        .map(|(l, c)| (l - 1, c))
                        .collect(),
                },
                Err(e) => TestOutcome::Error {
                    line: e.line().saturating_sub(1),
                    message: e.kind.to_string(),
                },
            }
        })
        .collect();
    TestReport {
        syntax: None,
        outcomes,
    }
}

/// Whether `program` passes every test of `task`.
pub fn passes(task: &CodeTask, program: &str) -> bool {
    run_tests(task, program).all_passed()
}

/// Lines holding a statement, and the lines of `while` statements, in source order.
fn statement_lines(p: &Program) -> (BTreeSet<usize>, Vec<usize>) {
    fn walk(stmts: &[Stmt], lines: &mut BTreeSet<usize>, whiles: &mut Vec<usize>) {
        for s in stmts {
            lines.insert(s.pos.line);
            match &s.kind {
                StmtKind::If {
                    then, otherwise, ..
                } => {
                    walk(then, lines, whiles);
                    walk(otherwise, lines, whiles);
                }
                StmtKind::While { body, .. } => {
                    whiles.push(s.pos.line);
                    walk(body, lines, whiles);
                }
                _ => {}
            }
        }
    }
    let (mut lines, mut whiles) = (BTreeSet::new(), Vec::new());
    walk(&p.stmts, &mut lines, &mut whiles);
    (lines, whiles)
}

/// How often the gold program's first loop tested its condition on `test` (None: no loop).
fn gold_loop_count(task: &CodeTask, test: &TestCase) -> Option<u64> {
    let gold = lang::parse(&task.gold).ok()?;
    let (_, whiles) = statement_lines(&gold);
    let line = *whiles.first()?;
    let src = format!("{}{}", header(&task.inputs, &test.inputs), task.gold);
    let exec = lang::run_with(
        &src,
        &Limits {
            max_steps: task.max_steps,
        },
    )
    .ok()?;
    Some(exec.line_counts.get(&(line + 1)).copied().unwrap_or(0))
}

/// Printed values for a message: `9`, `3, 1`, or the first three and the count
/// (`3, 3, 3, … (12 values)`), so a program printing in a loop cannot make the message long.
fn show_values(output: &str) -> String {
    let v: Vec<&str> = output.split('\n').collect();
    if v.len() <= 3 {
        v.join(", ")
    } else {
        format!("{}, … ({} values)", v[..3].join(", "), v.len())
    }
}

/// The feedback message for `program` from its test report (module docs); None when every test
/// passed.
pub fn feedback(task: &CodeTask, program: &str, report: &TestReport) -> Option<String> {
    if let Some(s) = &report.syntax {
        return Some(format!("line {}: syntax error: {}", s.line, s.message));
    }
    let (i, outcome) = report
        .outcomes
        .iter()
        .enumerate()
        .find(|(_, o)| !matches!(o, TestOutcome::Pass))?;
    let test = &task.tests[i];
    let inputs = show_inputs(&task.inputs, &test.inputs);
    match outcome {
        TestOutcome::Pass => None,
        TestOutcome::Error { line, message } => {
            Some(format!("for {inputs}, line {line} failed: {message}"))
        }
        TestOutcome::Wrong { got, line_counts } => {
            let expected = show_values(&test.expected);
            let mut msg = if got.is_empty() {
                format!("for {inputs} expected {expected} but printed nothing")
            } else {
                format!(
                    "for {inputs} expected {expected} but got {}",
                    show_values(got)
                )
            };
            if let Ok(p) = lang::parse(program) {
                let (lines, whiles) = statement_lines(&p);
                let count = |l: &usize| line_counts.get(l).copied().unwrap_or(0);
                if let Some(l) = lines.iter().find(|l| count(l) == 0) {
                    msg.push_str(&format!("; line {l} ran 0 times"));
                } else if let (Some(l), Some(want)) = (whiles.first(), gold_loop_count(task, test))
                {
                    let k = count(l);
                    if k != want {
                        msg.push_str(&format!("; line {l} ran {k} times, expected {want}"));
                    }
                }
            }
            Some(msg)
        }
    }
}

// ------------------------------------------------------------------------------- bugs

/// The kind of bug [`mutate`] plants.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mutation {
    /// An arithmetic operator replaced by another (`+ - *`), or a comparison by another
    /// (`< <= > >=`).
    Operator,
    /// An integer literal one more or one less (0 becomes 1).
    Constant,
    /// A variable read replaced by another name of the program.
    Variable,
}

/// Mutation sites of each kind, in a fixed walk order.
#[derive(Default)]
struct Sites {
    ops: usize,
    ints: usize,
    vars: usize,
}

fn count_expr(e: &Expr, s: &mut Sites) {
    match &e.kind {
        ExprKind::Int(_) => s.ints += 1,
        ExprKind::Var(_) => s.vars += 1,
        ExprKind::Unary(_, x) => count_expr(x, s),
        ExprKind::Binary(op, l, r) => {
            if mutable_op(*op) {
                s.ops += 1;
            }
            count_expr(l, s);
            count_expr(r, s);
        }
    }
}

fn mutable_op(op: BinOp) -> bool {
    matches!(
        op,
        BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge
    )
}

fn for_each_expr(stmts: &mut [Stmt], f: &mut dyn FnMut(&mut Expr)) {
    for s in stmts {
        match &mut s.kind {
            StmtKind::Let { value, .. } | StmtKind::Assign { value, .. } => f(value),
            StmtKind::Print(value) => f(value),
            StmtKind::If {
                cond,
                then,
                otherwise,
            } => {
                f(cond);
                for_each_expr(then, f);
                for_each_expr(otherwise, f);
            }
            StmtKind::While { cond, body } => {
                f(cond);
                for_each_expr(body, f);
            }
        }
    }
}

fn names_of(stmts: &[Stmt], out: &mut BTreeSet<String>) {
    fn expr(e: &Expr, out: &mut BTreeSet<String>) {
        match &e.kind {
            ExprKind::Var(n) => {
                out.insert(n.clone());
            }
            ExprKind::Unary(_, x) => expr(x, out),
            ExprKind::Binary(_, l, r) => {
                expr(l, out);
                expr(r, out);
            }
            ExprKind::Int(_) => {}
        }
    }
    for s in stmts {
        match &s.kind {
            StmtKind::Let { name, value } | StmtKind::Assign { name, value } => {
                out.insert(name.clone());
                expr(value, out);
            }
            StmtKind::Print(v) => expr(v, out),
            StmtKind::If {
                cond,
                then,
                otherwise,
            } => {
                expr(cond, out);
                names_of(then, out);
                names_of(otherwise, out);
            }
            StmtKind::While { cond, body } => {
                expr(cond, out);
                names_of(body, out);
            }
        }
    }
}

/// Applies `f` to the `target`-th site (in walk order) that `pick` selects.
fn at_site(
    e: &mut Expr,
    counter: &mut usize,
    target: usize,
    pick: &dyn Fn(&Expr) -> bool,
    f: &mut dyn FnMut(&mut Expr),
) {
    if pick(e) {
        if *counter == target {
            f(e);
            *counter += 1;
            return;
        }
        *counter += 1;
    }
    match &mut e.kind {
        ExprKind::Unary(_, x) => at_site(x, counter, target, pick, f),
        ExprKind::Binary(_, l, r) => {
            at_site(l, counter, target, pick, f);
            at_site(r, counter, target, pick, f);
        }
        _ => {}
    }
}

/// One seeded bug in `program` (canonically printed), or None when it does not parse or has no
/// site for any mutation. The kind is drawn uniformly among the kinds with a site, then the site.
pub fn mutate(program: &str, rng: &mut Rng) -> Option<(String, Mutation)> {
    let mut p = lang::parse(program).ok()?;
    let mut sites = Sites::default();
    for_each_expr(&mut p.stmts, &mut |e| count_expr(e, &mut sites));
    let mut names = BTreeSet::new();
    names_of(&p.stmts, &mut names);
    let mut kinds = Vec::new();
    if sites.ops > 0 {
        kinds.push((Mutation::Operator, sites.ops));
    }
    if sites.ints > 0 {
        kinds.push((Mutation::Constant, sites.ints));
    }
    if sites.vars > 0 && names.len() > 1 {
        kinds.push((Mutation::Variable, sites.vars));
    }
    if kinds.is_empty() {
        return None;
    }
    let (kind, n) = kinds[rng.below(kinds.len())];
    let target = rng.below(n);
    let choice = rng.below(3);
    let names: Vec<String> = names.into_iter().collect();
    let pick: Box<dyn Fn(&Expr) -> bool> = match kind {
        Mutation::Operator => {
            Box::new(|e: &Expr| matches!(&e.kind, ExprKind::Binary(op, ..) if mutable_op(*op)))
        }
        Mutation::Constant => Box::new(|e: &Expr| matches!(e.kind, ExprKind::Int(_))),
        Mutation::Variable => Box::new(|e: &Expr| matches!(e.kind, ExprKind::Var(_))),
    };
    let mut apply = |e: &mut Expr| match &mut e.kind {
        ExprKind::Binary(op, ..) => {
            let group: &[BinOp] = if op.is_comparison() {
                &[BinOp::Lt, BinOp::Le, BinOp::Gt, BinOp::Ge]
            } else {
                &ARITH
            };
            let others: Vec<BinOp> = group.iter().copied().filter(|o| o != op).collect();
            *op = others[choice % others.len()];
        }
        ExprKind::Int(v) => {
            *v = if *v == 0 || choice.is_multiple_of(2) {
                *v + 1
            } else {
                *v - 1
            }
        }
        ExprKind::Var(name) => {
            let others: Vec<&String> = names.iter().filter(|n| *n != name).collect();
            *name = others[choice % others.len()].clone();
        }
        ExprKind::Unary(..) => {}
    };
    let mut counter = 0usize;
    for_each_expr(&mut p.stmts, &mut |e| {
        at_site(e, &mut counter, target, &*pick, &mut apply)
    });
    Some((p.to_string(), kind))
}

/// A buggy version of the task's gold program that fails at least one test (up to 20 draws), or
/// None.
pub fn buggy_program(task: &CodeTask, rng: &mut Rng) -> Option<(String, Mutation)> {
    for _ in 0..20 {
        if let Some((p, m)) = mutate(&task.gold, rng) {
            if !passes(task, &p) {
                return Some((p, m));
            }
        }
    }
    None
}
