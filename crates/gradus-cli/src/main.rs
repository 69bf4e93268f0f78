//! The `gradus` binary: argument parsing and config resolution only; the work is in the library
//! crates. Errors print their whole chain and exit with status 1; user input never panics.

use gradus_cli::config;
use gradus_cli::eval_cmd::{self, EvalCmd};
use gradus_cli::lab_cmd::{self, LabCmd};

mod lora_cmd;

use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Parser, Subcommand};

use gradus_data::dataset::{Fields, Shape};
use gradus_data::tokenizer::Tokenizer;
use gradus_model::generate::{generate, SamplingConfig};
use gradus_model::ForwardInput;
use gradus_tensor::Device;
use gradus_train::recipe::RecipeConfig;
use gradus_train::rundir::Start;

#[derive(Parser)]
#[command(
    name = "gradus",
    version,
    about = "Curate data for, train, align and evaluate decoder language models"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// The main job on built-in data, no download: train a tokenizer and a tiny model from scratch,
    /// SFT it on an instruction task, show samples and accuracy before and after, write a report.
    Quickstart(QuickstartArgs),
    /// Train with a recipe.
    #[command(subcommand)]
    Train(TrainCmd),
    /// Per-token log-probs, total log-prob and loss of a text under a checkpoint.
    Score(ScoreArgs),
    /// Sample continuations from a checkpoint (KV cache, greedy/temperature/top-k/top-p).
    Generate(GenerateArgs),
    /// Tokenizer tools.
    #[command(subcommand)]
    Tokenizer(TokenizerCmd),
    /// Evaluate reward models and preference-trained policies.
    #[command(subcommand)]
    Eval(EvalCmd),
    /// Synthetic experiments from the research behind gradus.
    #[command(subcommand)]
    Lab(LabCmd),
    /// LoRA adapter tools (PEFT layout).
    #[command(subcommand)]
    Lora(lora_cmd::LoraCmd),
    /// Data curation: stats, dedup (exact / MinHash), decontaminate, filter, from-files, embed,
    /// prune (SCIP / SemDeDup / D4), corrupt, probe.
    #[command(subcommand)]
    Data(gradus_cli::data_cmd::DataCmd),
    /// Training dynamics: checkpoint statistics and training maps with detour states (Hu et al. 2023).
    #[command(subcommand)]
    Dynamics(gradus_cli::dynamics_cmd::DynamicsCmd),
    /// N seeds of a recipe as N run directories (`--jobs` at a time; finished seeds are skipped),
    /// with a summary table.
    Sweep(gradus_cli::sweep_cmd::SweepArgs),
    /// Compare run directories on one page: each shared metric as one plot with a line per run,
    /// last values side by side, and the settings their configs differ in.
    Report(ReportArgs),
}

#[derive(Args, Clone)]
struct RecipeArgs {
    /// A TOML config file (see configs/).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Override a config value: --set train.lr=1e-3 (value parsed as TOML). Repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// Print the resolved config and exit.
    #[arg(long)]
    show_config: bool,
    /// Continue from the run directory's latest checkpoint. Settings may differ from the run's
    /// recorded config only where `--set` says so (and never the model, data or batch shape).
    #[arg(long, conflicts_with = "overwrite")]
    resume: bool,
    /// Start a new run where one exists: the old run directory is moved aside to
    /// `<name>.replaced-<time>` (nothing is deleted).
    #[arg(long)]
    overwrite: bool,
}

impl RecipeArgs {
    /// How the recipe treats its run directory.
    fn start(&self) -> Start {
        config::start(self.resume, self.overwrite, &self.sets)
    }
}

#[derive(Subcommand)]
enum TrainCmd {
    /// Next-token pretraining on text (from scratch or from a checkpoint).
    Pretrain(RecipeArgs),
    /// Supervised fine-tuning on prompt/completion or chat data, with packing and loss masks.
    Sft(RecipeArgs),
    /// Preference optimisation: `[objective] kind = dpo | robust | ipo | dpo_norm | simpo |
    /// gamma_dpo | hinge | kto | marge`, with ranking-accuracy diagnostics.
    Dpo(RecipeArgs),
    /// A reward model: `[objective] kind = bt | bt_margin | scaled_bt | regression`.
    Reward(RecipeArgs),
    /// RL from verifiable rewards: `[algorithm] kind = grpo | rloo | reinforce_pp | remax`,
    /// `[[rewards]]` (exact, numeric, regex, task, command); completions.jsonl per logged step.
    Rl(RecipeArgs),
}

#[derive(Args)]
struct QuickstartArgs {
    /// Parent directory of the two runs it writes.
    #[arg(long, default_value = "runs")]
    dir: PathBuf,
    /// A much shorter run (for smoke tests).
    #[arg(long)]
    fast: bool,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Move earlier quickstart runs in --dir aside (never deleted) instead of refusing to start.
    #[arg(long)]
    overwrite: bool,
    /// Run the reduced size (the seeded test's guard) instead of the full one.
    #[arg(long, hide = true)]
    reduced: bool,
    /// Override a setting of the quickstart's plan, `key=value` (TOML value; for experiments).
    #[arg(long = "plan-set", hide = true, value_name = "KEY=VALUE")]
    plan_set: Vec<String>,
}

#[derive(Args)]
struct ScoreArgs {
    /// A Hugging Face checkpoint directory (config.json, model.safetensors, tokenizer.json).
    #[arg(long)]
    model: PathBuf,
    #[arg(long, conflicts_with = "ids")]
    text: Option<String>,
    /// Comma-separated token ids.
    #[arg(long, value_delimiter = ',')]
    ids: Option<Vec<u32>>,
    /// Prepend the tokenizer's BOS token to --text.
    #[arg(long)]
    bos: bool,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct ReportArgs {
    /// Run directories (each with metrics.jsonl).
    #[arg(required = true)]
    runs: Vec<PathBuf>,
    /// Where to write the page.
    #[arg(long, default_value = "compare.html")]
    out: PathBuf,
    /// Plot only these metrics (comma-separated), e.g. `train/loss,val/loss`.
    #[arg(long, value_delimiter = ',')]
    metrics: Vec<String>,
}

fn compare(a: ReportArgs) -> Result<()> {
    let only = (!a.metrics.is_empty()).then_some(a.metrics.as_slice());
    let html = gradus_train::compare::compare_runs(&a.runs, only)?;
    gradus_tensor::io::write_atomic(&a.out, html.as_bytes())
        .with_context(|| format!("writing {}", a.out.display()))?;
    println!("wrote {}", a.out.display());
    Ok(())
}

#[derive(Args)]
struct GenerateArgs {
    /// A model directory, a gradus checkpoint, or a PEFT adapter directory (its
    /// `base_model_name_or_path` is loaded and the adapter merged).
    #[arg(long)]
    model: PathBuf,
    /// A prompt; repeat for a batch. With --chat, each is one user message.
    #[arg(long = "prompt", required_unless_present = "messages")]
    prompts: Vec<String>,
    /// Treat each --prompt as a user message and render it with the model's chat template
    /// (`chat_template` in tokenizer_config.json; ChatML when it has none), generation prompt added.
    #[arg(long)]
    chat: bool,
    /// With --chat: a system message before each user message.
    #[arg(long, requires = "chat")]
    system: Option<String>,
    /// A JSON file of conversations to continue with the chat template: one conversation (a list
    /// of `{"role", "content"}` messages) or a list of them (a batch). Implies --chat.
    #[arg(long, conflicts_with = "prompts")]
    messages: Option<PathBuf>,
    #[arg(long, default_value_t = 64)]
    max_new_tokens: usize,
    /// 0 = greedy.
    #[arg(long, default_value_t = 0.0)]
    temperature: f64,
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    #[arg(long, default_value_t = 1.0)]
    top_p: f64,
    /// Stop a row when its text contains this string (repeatable); the string is cut off.
    #[arg(long = "stop")]
    stops: Vec<String>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum TokenizerCmd {
    /// Train a byte-level BPE on text files (one document per line; .jsonl uses the `text` field).
    Train {
        #[arg(long = "input", required = true)]
        inputs: Vec<PathBuf>,
        #[arg(long, default_value_t = 4096)]
        vocab_size: usize,
        #[arg(long)]
        out: PathBuf,
    },
}

fn main() {
    gradus_tensor::init_runtime();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("GRADUS_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    if let Err(e) = run(Cli::parse()) {
        eprintln!("error: {e}");
        for cause in e.chain().skip(1) {
            eprintln!("  caused by: {cause}");
        }
        if e.chain().any(|c| {
            c.to_string()
                .starts_with(gradus_train::interrupt::INTERRUPTED)
        }) {
            eprintln!("to continue: {}", resume_command());
            std::process::exit(gradus_train::interrupt::exit_code());
        }
        std::process::exit(1);
    }
}

/// This invocation's command line with `--resume` (and without `--overwrite`), shell-quoted.
fn resume_command() -> String {
    let mut args: Vec<String> = std::env::args().collect();
    if let Some(first) = args.first_mut() {
        *first = "gradus".into();
    }
    args.retain(|a| a != "--overwrite");
    if !args.iter().any(|a| a == "--resume") {
        args.push("--resume".into());
    }
    let quote = |a: &String| {
        if !a.is_empty()
            && a.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@+".contains(c))
        {
            a.clone()
        } else {
            format!("'{}'", a.replace('\'', "'\\''"))
        }
    };
    args.iter().map(quote).collect::<Vec<_>>().join(" ")
}

/// SIGTERM/SIGINT then stop training after the current step with a checkpoint.
fn graceful() -> Result<()> {
    gradus_train::interrupt::install().context("installing the SIGTERM/SIGINT handlers")
}

fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Quickstart(a) => {
            graceful()?;
            let out =
                gradus_train::quickstart::run(&gradus_train::quickstart::QuickstartOptions {
                    dir: a.dir,
                    size: if a.fast {
                        gradus_train::quickstart::QuickstartSize::Smoke
                    } else if a.reduced {
                        gradus_train::quickstart::QuickstartSize::Reduced
                    } else {
                        gradus_train::quickstart::QuickstartSize::Full
                    },
                    seed: a.seed,
                    progress: true,
                    overwrite: a.overwrite,
                    overrides: a.plan_set,
                })?;
            println!("{}", out.summary);
            Ok(())
        }
        Cmd::Train(TrainCmd::Pretrain(a)) => recipe(a, gradus_train::pretrain::run),
        Cmd::Train(TrainCmd::Sft(a)) => recipe(a, gradus_train::sft::run),
        Cmd::Train(TrainCmd::Dpo(a)) => {
            let Some(cfg) = resolved::<gradus_train::dpo::DpoConfig>(&a)? else {
                return Ok(());
            };
            cfg.validate()?;
            graceful()?;
            let s = gradus_train::dpo::run(&cfg, a.start())?;
            print_fit(&s.fit);
            if let (Some(b), Some(r)) = (&s.before, &s.after) {
                println!(
                    "held-out pairs: reward accuracy {:.1}% → {:.1}%; ranking accuracy {:.1}% → {:.1}% (idealised at β=0.1: {:.1}%); {} pairs skipped",
                    100.0 * b.reward_accuracy,
                    100.0 * r.reward_accuracy,
                    100.0 * b.ranking_accuracy,
                    100.0 * r.ranking_accuracy,
                    100.0 * r.idealised.get(1).map_or(f64::NAN, |x| x.1),
                    s.skipped
                );
            }
            Ok(())
        }
        Cmd::Train(TrainCmd::Reward(a)) => {
            let Some(cfg) = resolved::<gradus_train::reward::RewardConfig>(&a)? else {
                return Ok(());
            };
            cfg.validate()?;
            graceful()?;
            let s = gradus_train::reward::run(&cfg, a.start())?;
            print_fit(&s.fit);
            println!(
                "held-out pairwise accuracy {:.1}% over {} pairs",
                100.0 * s.eval.accuracy,
                s.eval.pairs
            );
            Ok(())
        }
        Cmd::Train(TrainCmd::Rl(a)) => {
            let Some(cfg) = resolved::<gradus_train::rl::RlConfig>(&a)? else {
                return Ok(());
            };
            cfg.validate()?;
            graceful()?;
            let s = gradus_train::rl::run(&cfg, a.start())?;
            print_fit(&s.fit);
            Ok(())
        }
        Cmd::Eval(c) => eval_cmd::eval(c),
        Cmd::Lab(c) => lab_cmd::lab(c),
        Cmd::Score(a) => score(a),
        Cmd::Generate(a) => gen(a),
        Cmd::Lora(c) => lora_cmd::run(c),
        Cmd::Data(c) => gradus_cli::data_cmd::run(c),
        Cmd::Dynamics(c) => gradus_cli::dynamics_cmd::run(c),
        Cmd::Sweep(a) => gradus_cli::sweep_cmd::run(a),
        Cmd::Report(a) => compare(a),
        Cmd::Tokenizer(TokenizerCmd::Train {
            inputs,
            vocab_size,
            out,
        }) => {
            let mut texts = Vec::new();
            for p in &inputs {
                texts.extend(
                    gradus_data::dataset::read_texts(p, Shape::Auto, &Fields::default())
                        .with_context(|| format!("reading {}", p.display()))?,
                );
            }
            let specials = ["<|endoftext|>", "<|pad|>", "<|im_start|>", "<|im_end|>"];
            let mut tok = Tokenizer::train_bpe(texts.iter(), vocab_size, &specials, 2)?;
            tok.set_eos(Some("<|endoftext|>"))?;
            tok.set_bos(Some("<|endoftext|>"))?;
            tok.set_pad(Some("<|pad|>"))?;
            tok.save(&out)?;
            println!(
                "trained a byte-level BPE with {} tokens on {} documents → {}",
                tok.vocab_size(),
                texts.len(),
                out.display()
            );
            Ok(())
        }
    }
}

/// The resolved config, or None after printing it for `--show-config`.
fn resolved<T: serde::Serialize + serde::de::DeserializeOwned + Default>(
    a: &RecipeArgs,
) -> Result<Option<T>> {
    let mut cfg: T = config::resolve(a.config.as_deref(), &a.sets)?;
    if let Some(ck) = config::resolve_init_from(&mut cfg)? {
        eprintln!(
            "model.init_from: the run's latest checkpoint, {}",
            ck.display()
        );
    }
    if a.show_config {
        print!("{}", config::to_toml(&cfg)?);
        return Ok(None);
    }
    Ok(Some(cfg))
}

fn recipe(
    a: RecipeArgs,
    f: fn(&RecipeConfig, Start) -> gradus_tensor::Result<gradus_train::trainer::FitSummary>,
) -> Result<()> {
    let Some(cfg) = resolved::<RecipeConfig>(&a)? else {
        return Ok(());
    };
    cfg.validate()?;
    graceful()?;
    print_fit(&f(&cfg, a.start())?);
    Ok(())
}

fn print_fit(s: &gradus_train::trainer::FitSummary) {
    if s.already_complete {
        println!(
            "the run in {} is already complete at step {} (train.steps); nothing to train. To train longer: --resume --set train.steps=<more>",
            s.run_dir.display(),
            s.steps
        );
        return;
    }
    if s.start_step > 0 {
        println!("resumed at step {}", s.start_step);
    }
    println!(
        "trained {} steps in {:.1}s; loss {:.4} → {:.4}; run directory {}",
        s.steps,
        s.seconds,
        s.first_loss.unwrap_or(f64::NAN),
        s.last_loss.unwrap_or(f64::NAN),
        s.run_dir.display()
    );
}

/// Refuses weights holding NaN or infinity, naming the first such tensor (they would give
/// NaN scores and samples of garbage with exit status 0).
fn check_finite(model: &gradus_model::Decoder, dir: &std::path::Path) -> Result<()> {
    for (name, v) in model.named_params() {
        let vals = v
            .as_tensor()
            .flatten_all()?
            .to_dtype(gradus_tensor::DType::F32)?
            .to_vec1::<f32>()?;
        let bad = vals.iter().filter(|x| !x.is_finite()).count();
        if bad > 0 {
            let first = vals
                .iter()
                .find(|x| !x.is_finite())
                .copied()
                .unwrap_or(f32::NAN);
            bail!("{}: tensor `{name}` holds {bad} non-finite value(s) (e.g. {first}); the checkpoint is unusable (a diverged run?)", dir.display());
        }
    }
    Ok(())
}

/// A model directory (or a PEFT adapter directory, merged into the base its
/// `base_model_name_or_path` names, or a run directory: its latest checkpoint) and its tokenizer,
/// when it has one.
fn load(dir: &std::path::Path) -> Result<(gradus_model::Decoder, Option<Tokenizer>)> {
    let dir = &gradus_eval::lm::resolve_model_dir(dir)?;
    gradus_train::checkpoint::verify_checkpoint(dir)?;
    let model = gradus_model::lora::load_model_dir(dir, &Device::Cpu)?;
    check_finite(&model, dir)?;
    let tok_dir = gradus_model::lora::tokenizer_dir(dir)?;
    let tok = if tok_dir.join("tokenizer.json").exists() {
        let t = Tokenizer::from_dir(&tok_dir)?;
        t.check_fits(model.cfg.vocab_size)?;
        Some(t)
    } else {
        None
    };
    Ok((model, tok))
}

fn score(a: ScoreArgs) -> Result<()> {
    let (model, tok) = load(&a.model)?;
    let ids: Vec<u32> = match (&a.text, &a.ids) {
        (Some(t), None) => {
            let tok = tok
                .as_ref()
                .ok_or_else(|| anyhow!("{}: no tokenizer.json; pass --ids", a.model.display()))?;
            let mut ids = Vec::new();
            if a.bos {
                ids.push(
                    tok.bos_id()
                        .ok_or_else(|| anyhow!("--bos: the tokenizer has no BOS token"))?,
                );
            }
            ids.extend(tok.encode(t, false)?);
            ids
        }
        (None, Some(ids)) => ids.clone(),
        _ => bail!("give --text or --ids"),
    };
    if ids.len() < 2 {
        bail!("need at least 2 tokens to score (got {})", ids.len());
    }
    let n = ids.len() - 1;
    let lp = model
        .target_logprobs(&ForwardInput::new(&ids[..n], 1, n), &ids[1..])?
        .to_vec1::<f32>()?;
    let total: f64 = lp.iter().map(|&x| x as f64).sum();
    if !total.is_finite() {
        bail!(
            "{}: the log-probabilities are not finite ({total}); the model's outputs overflow",
            a.model.display()
        );
    }
    let loss = -total / n as f64;
    let pieces: Vec<String> = ids
        .iter()
        .map(|&i| {
            tok.as_ref()
                .and_then(|t| t.id_to_token(i))
                .unwrap_or_else(|| i.to_string())
        })
        .collect();
    if a.json {
        let toks: Vec<_> = (0..n)
            .map(
                |i| serde_json::json!({"id": ids[i + 1], "token": pieces[i + 1], "logprob": lp[i]}),
            )
            .collect();
        println!(
            "{}",
            serde_json::json!({"tokens": toks, "first_token": ids[0], "total_logprob": total, "loss": loss, "perplexity": loss.exp()})
        );
    } else {
        println!("{:>6}  {:>10}  token", "pos", "logprob");
        for i in 0..n {
            println!("{:>6}  {:>10.4}  {:?}", i + 1, lp[i], pieces[i + 1]);
        }
        println!(
            "total log-prob {total:.4} over {n} tokens; loss {loss:.4}; perplexity {:.3}",
            loss.exp()
        );
    }
    Ok(())
}

/// The conversations of `generate --messages FILE`: one conversation or a list of them.
fn read_conversations(path: &std::path::Path) -> Result<Vec<Vec<gradus_data::dataset::Message>>> {
    use gradus_data::dataset::Message;
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))?;
    let one = |v: &serde_json::Value, at: &str| -> Result<Vec<Message>> {
        let msgs: Vec<Message> = serde_json::from_value(v.clone()).with_context(|| {
            format!(
                "{}{at}: expected a list of {{\"role\", \"content\"}} messages",
                path.display()
            )
        })?;
        if msgs.is_empty() {
            bail!("{}{at}: an empty conversation", path.display());
        }
        Ok(msgs)
    };
    match &v {
        serde_json::Value::Array(items)
            if items.iter().all(|x| x.is_array()) && !items.is_empty() =>
        {
            items
                .iter()
                .enumerate()
                .map(|(i, c)| one(c, &format!(" conversation {i}")))
                .collect()
        }
        _ => Ok(vec![one(&v, "")?]),
    }
}

fn gen(a: GenerateArgs) -> Result<()> {
    use gradus_data::dataset::Message;
    let (model, tok) = load(&a.model)?;
    let tok =
        tok.ok_or_else(|| anyhow!("{}: generate needs a tokenizer.json", a.model.display()))?;
    let conversations: Option<Vec<Vec<Message>>> = match (&a.messages, a.chat) {
        (Some(path), _) => Some(read_conversations(path)?),
        (None, true) => Some(
            a.prompts
                .iter()
                .map(|p| {
                    let mut c: Vec<Message> = a
                        .system
                        .iter()
                        .map(|s| Message::new("system", s.clone()))
                        .collect();
                    c.push(Message::new("user", p.clone()));
                    c
                })
                .collect(),
        ),
        (None, false) => None,
    };
    let mut stops = a.stops.clone();
    let mut eos: Vec<u32> = tok
        .eos_id()
        .or(model.cfg.eos_token_id)
        .into_iter()
        .collect();
    // What each row shows as its prompt, and the text the model continues.
    let (shown, rendered): (Vec<String>, Vec<String>) = match &conversations {
        Some(convs) => {
            let tpl = gradus_data::chat::ChatTemplate::for_tokenizer(&tok)?;
            // The reply ends at the template's end-of-turn: a token when the vocabulary has it,
            // else its text.
            let end = tpl.eos_token().to_string();
            if !end.is_empty() {
                match tok.token_to_id(&end) {
                    Some(id) => eos.push(id),
                    None => stops.push(end),
                }
            }
            let rendered = convs
                .iter()
                .map(|c| tpl.render(c, true))
                .collect::<gradus_tensor::Result<Vec<_>>>()?;
            let shown = convs
                .iter()
                .map(|c| c.last().map(|m| m.content.clone()).unwrap_or_default())
                .collect();
            (shown, rendered)
        }
        None => (a.prompts.clone(), a.prompts.clone()),
    };
    let prompts: Vec<Vec<u32>> = rendered
        .iter()
        .map(|p| {
            // Chat templates write their own BOS (`bos_token`); a plain prompt gets the
            // tokenizer's.
            let mut ids: Vec<u32> = if conversations.is_some() {
                vec![]
            } else {
                tok.bos_id().into_iter().collect()
            };
            ids.extend(tok.encode(p, false)?);
            Ok(ids)
        })
        .collect::<Result<_>>()?;
    let cfg = SamplingConfig {
        max_new_tokens: a.max_new_tokens,
        temperature: a.temperature,
        top_k: a.top_k,
        top_p: a.top_p,
        seed: a.seed,
    };
    let t0 = std::time::Instant::now();
    let outs = generate(&model, &prompts, &cfg, &eos, &mut |_, toks| {
        !stops.is_empty()
            && tok
                .decode(toks, true)
                .map(|s| stops.iter().any(|st| s.contains(st.as_str())))
                .unwrap_or(false)
    })?;
    let secs = t0.elapsed().as_secs_f64();
    let n_new: usize = outs.iter().map(|o| o.tokens.len()).sum();
    let mut rows = Vec::new();
    for ((p, r), o) in shown.iter().zip(&rendered).zip(&outs) {
        let mut text = tok.decode(&o.tokens, true)?;
        if let Some(cut) = stops.iter().filter_map(|s| text.find(s.as_str())).min() {
            text.truncate(cut);
        }
        rows.push((p.clone(), r.clone(), text, o.finish));
    }
    if a.json {
        let v: Vec<_> = rows
            .iter()
            .map(|(p, r, t, f)| {
                let mut row = serde_json::json!({"prompt": p, "completion": t, "finish": f});
                if conversations.is_some() {
                    row["rendered_prompt"] = serde_json::json!(r);
                }
                row
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({"generations": v, "new_tokens": n_new, "seconds": secs})
        );
    } else {
        for (p, r, t, f) in rows {
            if conversations.is_some() {
                println!("--- {p:?} ({f:?})\n{t}");
            } else {
                println!("--- {p:?} ({f:?})\n{r}{t}");
            }
        }
        eprintln!(
            "{n_new} new tokens in {secs:.2}s ({:.1} tokens/s)",
            n_new as f64 / secs.max(1e-9)
        );
    }
    Ok(())
}
