//! Chat templates render exactly as transformers' `apply_chat_template` does: the committed fixture
//! `fixtures/chat_templates/rendered.json` (written by its `gen.py` with transformers) holds five
//! templates in the styles of common model families × four conversations × add_generation_prompt,
//! and gradus must give the same string byte for byte, or fail where the template raises.

use std::path::Path;

use gradus_data::chat::ChatTemplate;
use gradus_data::dataset::Message;
use serde_json::Value;

fn fixture() -> Value {
    let p =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/chat_templates/rendered.json");
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap()
}

#[test]
fn renders_as_transformers() {
    let f = fixture();
    let bos = f["bos_token"].as_str().unwrap().to_string();
    let eos = f["eos_token"].as_str().unwrap().to_string();
    let cases = f["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 40);
    let (mut rendered, mut raised) = (0, 0);
    let mut failures = Vec::new();
    for c in cases {
        let tname = c["template"].as_str().unwrap();
        let cname = c["conversation"].as_str().unwrap();
        let gen = c["add_generation_prompt"].as_bool().unwrap();
        let tpl = ChatTemplate::new(
            tname,
            f["templates"][tname].as_str().unwrap(),
            Some(bos.clone()),
            Some(eos.clone()),
        )
        .unwrap();
        let messages: Vec<Message> = f["conversations"][cname]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| Message::new(m["role"].as_str().unwrap(), m["content"].as_str().unwrap()))
            .collect();
        let got = tpl.render(&messages, gen);
        let at = format!("{tname} × {cname} (generation prompt {gen})");
        match (c.get("rendered").and_then(Value::as_str), got) {
            (Some(want), Ok(got)) if got == want => rendered += 1,
            (Some(want), Ok(got)) => {
                failures.push(format!("{at}:\n  got  {got:?}\n  want {want:?}"))
            }
            (None, Err(e)) => {
                // The template's own message comes through, with the template named.
                let want = c["error"].as_str().unwrap();
                let e = e.to_string();
                if e.contains(want) && e.contains(tname) {
                    raised += 1;
                } else {
                    failures.push(format!("{at}: error {e:?}, transformers said {want:?}"));
                }
            }
            (Some(_), Err(e)) => failures.push(format!("{at}: gradus failed: {e}")),
            (None, Ok(got)) => failures.push(format!(
                "{at}: transformers raised, gradus rendered {got:?}"
            )),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!((rendered, raised), (38, 2));
}
