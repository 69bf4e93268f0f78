//! Chat templates and loss masks.

use gradus_data::chat::{encode_chat, encode_prompt_completion, ChatTemplate};
use gradus_data::dataset::Message;
use gradus_data::tokenizer::Tokenizer;

fn msgs(ms: &[(&str, &str)]) -> Vec<Message> {
    ms.iter().map(|(r, c)| Message::new(*r, *c)).collect()
}

fn corpus() -> Vec<String> {
    (0..50)
        .map(|i| {
            format!(
                "Hello there! How are you {i}? Fine. The answer is {}.\nuser assistant system\n",
                i * 3
            )
        })
        .collect()
}

fn chatml_tok() -> Tokenizer {
    Tokenizer::train_bpe(
        corpus(),
        400,
        &["<|endoftext|>", "<|pad|>", "<|im_start|>", "<|im_end|>"],
        2,
    )
    .unwrap()
}

const LLAMA3_SPECIALS: &[&str] = &[
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
];

/// Llama 3 instruct's template, as in its tokenizer_config.json.
const LLAMA3: &str = "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}";

/// Qwen2 instruct's template (default system prompt when none is given).
const QWEN2: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// Decoded text of each maximal run of masked tokens.
fn masked_runs(tok: &Tokenizer, ids: &[u32], mask: &[bool]) -> Vec<String> {
    assert_eq!(ids.len(), mask.len());
    let mut runs = Vec::new();
    let mut cur: Vec<u32> = Vec::new();
    for (&id, &m) in ids.iter().zip(mask) {
        if m {
            cur.push(id);
        } else if !cur.is_empty() {
            runs.push(tok.decode(&std::mem::take(&mut cur), false).unwrap());
        }
    }
    if !cur.is_empty() {
        runs.push(tok.decode(&cur, false).unwrap());
    }
    runs
}

#[test]
fn default_chatml_renders_known_text() {
    let tpl = ChatTemplate::chatml();
    let m = msgs(&[
        ("system", "You are terse."),
        ("user", "Hi"),
        ("assistant", "Hello!"),
    ]);
    assert_eq!(
        tpl.render(&m, false).unwrap(),
        "<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n"
    );
    assert_eq!(
        tpl.render(&m[1..2], true).unwrap(),
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    );
    // A tokenizer without chat_template gets ChatML.
    assert_eq!(
        ChatTemplate::for_tokenizer(&chatml_tok()).unwrap().source(),
        ChatTemplate::chatml().source()
    );
}

#[test]
fn llama3_template_renders_with_bos_and_trims() {
    let tpl = ChatTemplate::new(
        "llama3",
        LLAMA3,
        Some("<|begin_of_text|>".into()),
        Some("<|eot_id|>".into()),
    )
    .unwrap();
    let m = msgs(&[("user", "  Hi\n"), ("assistant", "Hello!")]);
    assert_eq!(
        tpl.render(&m, false).unwrap(),
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>\
         <|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>"
    );
    assert_eq!(
        tpl.render(&m[..1], true).unwrap(),
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>\
         <|start_header_id|>assistant<|end_header_id|>\n\n"
    );
}

#[test]
fn qwen2_template_adds_default_system() {
    let tpl = ChatTemplate::new("qwen2", QWEN2, None, None).unwrap();
    assert_eq!(
        tpl.render(&msgs(&[("user", "Hi")]), true).unwrap(),
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    );
}

#[test]
fn chatml_mask_covers_exactly_assistant_content_and_end_marker() {
    let tok = chatml_tok();
    let tpl = ChatTemplate::chatml();
    let m = msgs(&[
        ("system", "Be kind."),
        ("user", "Hello there!"),
        ("assistant", "Hello there! How are you?"),
        ("user", "Fine."),
        ("assistant", "The answer is 42.\n"),
    ]);
    let (ids, mask) = encode_chat(&tok, &tpl, &m, true).unwrap();
    assert_eq!(
        ids,
        tok.encode(&tpl.render(&m, false).unwrap(), false).unwrap()
    );
    // The newline after <|im_end|> belongs to the template's turn separator, not to the reply;
    // the reply's own trailing newline does belong to it.
    assert_eq!(
        masked_runs(&tok, &ids, &mask),
        [
            "Hello there! How are you?<|im_end|>",
            "The answer is 42.\n<|im_end|>"
        ]
    );

    let (ids2, all) = encode_chat(&tok, &tpl, &m, false).unwrap();
    assert_eq!(ids2, ids);
    assert!(all.iter().all(|&b| b));
}

#[test]
fn llama3_mask_with_a_trained_tokenizer() {
    let tok = Tokenizer::train_bpe(corpus(), 400, LLAMA3_SPECIALS, 2).unwrap();
    assert_eq!(tok.bos_id(), Some(0));
    let mut tok = tok;
    tok.set_chat_template(Some(LLAMA3.into()));
    tok.set_eos(Some("<|eot_id|>")).unwrap();
    let tpl = ChatTemplate::for_tokenizer(&tok).unwrap();
    let m = msgs(&[
        ("system", "Be brief."),
        ("user", "How are you?"),
        ("assistant", "Fine."),
        ("user", "And?"),
        ("assistant", " Hello there!"),
    ]);
    let (ids, mask) = encode_chat(&tok, &tpl, &m, true).unwrap();
    assert_eq!(ids[0], 0, "the template writes bos_token");
    // Llama 3's template trims the content, so the leading space is gone.
    assert_eq!(
        masked_runs(&tok, &ids, &mask),
        ["Fine.<|eot_id|>", "Hello there!<|eot_id|>"]
    );
}

#[test]
fn template_without_generation_prompt_masks_the_content() {
    let tok = chatml_tok();
    let tpl = ChatTemplate::new(
        "plain",
        "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}",
        None,
        None,
    )
    .unwrap();
    let m = msgs(&[
        ("user", "How are you?"),
        ("assistant", "Fine. The answer"),
        ("user", "Hello"),
    ]);
    let (ids, mask) = encode_chat(&tok, &tpl, &m, true).unwrap();
    // "assistant: " is the header and there is no end marker. The GPT-2 split gives " Fine" (space
    // included), one token in this vocabulary since " Fine" is frequent in the corpus: it overlaps
    // the reply, so it is learned, space and all.
    assert_eq!(tok.encode(" Fine", false).unwrap().len(), 1);
    let runs = masked_runs(&tok, &ids, &mask);
    assert_eq!(runs, [" Fine. The answer"]);
}

#[test]
fn generation_blocks_are_accepted() {
    let src = "{% for m in messages %}<|im_start|>{{ m.role }}\n{% if m.role == 'assistant' %}{% generation %}{{ m.content }}<|im_end|>{% endgeneration %}{% else %}{{ m.content }}<|im_end|>{% endif %}{{ '\n' }}{% endfor %}";
    // (trim_blocks, as in transformers, would eat a literal newline right after `{% endif %}`.)
    let tpl = ChatTemplate::new("trl", src, None, None).unwrap();
    let m = msgs(&[("user", "Hi"), ("assistant", "Yo")]);
    assert_eq!(
        tpl.render(&m, false).unwrap(),
        ChatTemplate::chatml().render(&m, false).unwrap()
    );
}

#[test]
fn python_methods_and_tojson() {
    let src = "{% for m in messages %}{% if m['role'].startswith('assi') %}[{{ m.content.strip().upper() }}]{% else %}{{ m.content.split(',') | join('|') }}{% endif %}{% endfor %}\
               {{ messages[0] | tojson }}{{ {'a': [1, 2]}.get('a') | tojson }}{{ {'a': 1}.get('b', 'none') }}\
               {% for k, v in {'x': 'é<'}.items() %}{{ k }}={{ v | tojson }}{% endfor %}";
    let tpl = ChatTemplate::new("py", src, None, None).unwrap();
    let out = tpl
        .render(&msgs(&[("user", "a,b,c"), ("assistant", "  ok \n")]), false)
        .unwrap();
    assert_eq!(
        out,
        r#"a|b|c[OK]{"role": "user", "content": "a,b,c"}[1, 2]nonex="é<""#
    );
}

#[test]
fn bad_templates_are_errors_naming_the_template() {
    let e = ChatTemplate::new(
        "my template",
        "{% for m in messages %}{{ m.content }",
        None,
        None,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("chat template (my template)") && e.contains("syntax error"),
        "{e}"
    );

    let src =
        "{% if messages[0]['role'] != 'user' %}{{ raise_exception('Conversation must start with user') }}{% endif %}ok";
    let tpl = ChatTemplate::new("strict", src, None, None).unwrap();
    assert_eq!(tpl.render(&msgs(&[("user", "x")]), false).unwrap(), "ok");
    let e = tpl
        .render(&msgs(&[("assistant", "x")]), false)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("chat template (strict)") && e.contains("Conversation must start with user"),
        "{e}"
    );

    let tpl = ChatTemplate::new("m", "{{ messages[0].content.frobnicate() }}", None, None).unwrap();
    let e = tpl
        .render(&msgs(&[("user", "x")]), false)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("chat template (m)") && e.contains("unknown method"),
        "{e}"
    );
}

#[test]
fn template_that_rewrites_history_is_refused_for_masks() {
    let tok = chatml_tok();
    let tpl = ChatTemplate::new(
        "reversed",
        "{% for m in messages | reverse %}{{ m.content }};{% endfor %}",
        None,
        None,
    )
    .unwrap();
    let m = msgs(&[("user", "a"), ("assistant", "b")]);
    let e = encode_chat(&tok, &tpl, &m, true).unwrap_err().to_string();
    assert!(e.contains("reversed") && e.contains("prefix"), "{e}");
}

#[test]
fn prompt_completion_mask() {
    let mut tok = chatml_tok();
    let p = "How are you?";
    let c = " Fine.";
    let (ids, mask) = encode_prompt_completion(&tok, p, c, false, true).unwrap();
    let np = tok.encode(p, false).unwrap().len();
    let nc = tok.encode(c, false).unwrap().len();
    assert_eq!(ids.len(), np + nc + 1);
    assert_eq!(*ids.last().unwrap(), 0, "<|endoftext|> is the EOS");
    assert_eq!(mask.iter().filter(|&&b| !b).count(), np);
    assert_eq!(masked_runs(&tok, &ids, &mask), [" Fine.<|endoftext|>"]);
    assert_eq!(
        tok.decode(&ids, false).unwrap(),
        "How are you? Fine.<|endoftext|>"
    );

    let e = encode_prompt_completion(&tok, p, c, true, true)
        .unwrap_err()
        .to_string();
    assert!(e.contains("add_bos") && e.contains("no BOS"), "{e}");
    tok.set_bos(Some("<|im_start|>")).unwrap();
    let (ids, mask) = encode_prompt_completion(&tok, p, c, true, false).unwrap();
    assert_eq!(ids[0], 2);
    assert!(!mask[0]);
    assert_eq!(masked_runs(&tok, &ids, &mask), [" Fine."]);
}
