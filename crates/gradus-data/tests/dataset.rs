//! Dataset readers: JSONL (+gzip), JSON arrays, Parquet, directories; and their error messages.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use gradus_data::dataset::{
    iter_dataset, read_dataset, read_jsonl, read_parquet, Example, Fields, Message, Shape,
};
use parquet::data_type::{ByteArray, ByteArrayType, Int32Type};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

fn text(t: &str) -> Example {
    Example::Text { text: t.into() }
}
fn pc(p: &str, c: &str) -> Example {
    Example::PromptCompletion {
        prompt: p.into(),
        completion: c.into(),
    }
}
fn chat(ms: &[(&str, &str)]) -> Example {
    Example::Chat {
        messages: ms.iter().map(|(r, c)| Message::new(*r, *c)).collect(),
    }
}

const MIXED: &str = r#"{"text": "hello", "id": 1}

{"prompt": "2+2=", "completion": "4", "text": "ignored: prompt wins"}
   
{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": [{"type": "text", "text": "hel"}, {"type": "text", "text": "lo"}]}]}
"#;

#[test]
fn jsonl_auto_shape_skips_blank_lines() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("d.jsonl");
    write(&p, MIXED);
    let got = read_jsonl(&p, Shape::Auto, &Fields::default()).unwrap();
    assert_eq!(
        got,
        vec![
            text("hello"),
            pc("2+2=", "4"),
            chat(&[("user", "hi"), ("assistant", "hello")])
        ]
    );
}

#[test]
fn explicit_shape_and_custom_field_names() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("qa.jsonl");
    write(
        &p,
        "{\"question\": \"q1\", \"answer\": \"a1\"}\r\n{\"question\": \"q2\", \"answer\": \"\"}\n",
    );
    let fields = Fields {
        prompt: "question".into(),
        completion: "answer".into(),
        ..Fields::default()
    };
    let got = read_jsonl(&p, Shape::PromptCompletion, &fields).unwrap();
    assert_eq!(got, vec![pc("q1", "a1"), pc("q2", "")]);
    // Auto finds them through the same names.
    assert_eq!(read_jsonl(&p, Shape::Auto, &fields).unwrap(), got);
    // As text they are missing the text field: line 1 is named.
    let e = read_jsonl(&p, Shape::Text, &fields)
        .unwrap_err()
        .to_string();
    assert!(
        e.ends_with("qa.jsonl:1: missing field \"text\" (shape text)"),
        "{e}"
    );
}

/// Each bad line on its own, with the message the user must see.
#[test]
fn jsonl_errors_name_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&str, Shape, &str)] = &[
        (
            "{\"text\": \"ok\"}\n{\"text\": \"unterminated}\n",
            Shape::Auto,
            "bad.jsonl:2: invalid JSON:",
        ),
        (
            "{\"text\": \"ok\"}\n\n{\"prompt\": \"p\"}\n",
            Shape::Auto,
            "bad.jsonl:3: missing field \"completion\" (shape prompt/completion)",
        ),
        (
            "{\"text\": 42}\n",
            Shape::Text,
            "bad.jsonl:1: field \"text\": expected a string, found number",
        ),
        (
            "{\"prompt\": \"p\", \"completion\": [\"x\"]}\n",
            Shape::Auto,
            "field \"completion\": expected a string, found array",
        ),
        (
            "{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}, {\"content\": \"b\"}]}\n",
            Shape::Chat,
            "bad.jsonl:1: field \"messages\": message 1: missing \"role\"",
        ),
        (
            "{\"messages\": [{\"role\": \"user\"}]}\n",
            Shape::Auto,
            "message 0: missing \"content\"",
        ),
        (
            "{\"messages\": [{\"role\": 3, \"content\": \"x\"}]}\n",
            Shape::Auto,
            "message 0: \"role\" should be a string, found number",
        ),
        (
            "{\"messages\": {\"role\": \"user\"}}\n",
            Shape::Auto,
            "field \"messages\": expected a list of messages, found object",
        ),
        (
            "[1, 2]\n",
            Shape::Auto,
            "bad.jsonl:1: expected a JSON object, found array",
        ),
        (
            "{\"body\": \"x\", \"id\": 1}\n",
            Shape::Auto,
            "(shape auto); found: body, id",
        ),
        (
            "{\"text\": null}\n",
            Shape::Text,
            "missing field \"text\" (shape text)",
        ),
    ];
    let p = dir.path().join("bad.jsonl");
    for (content, shape, want) in cases {
        write(&p, content);
        let e = read_jsonl(&p, *shape, &Fields::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(want),
            "for {content:?}\n  got:  {e}\n  want: {want}"
        );
    }
}

#[test]
fn streaming_yields_good_rows_before_the_bad_one() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("s.jsonl");
    write(
        &p,
        "{\"text\": \"a\"}\n{\"text\": \"b\"}\nnot json\n{\"text\": \"c\"}\n",
    );
    let mut it = iter_dataset(&p, Shape::Text, &Fields::default()).unwrap();
    assert_eq!(it.next().unwrap().unwrap(), text("a"));
    assert_eq!(it.next().unwrap().unwrap(), text("b"));
    let e = it.next().unwrap().unwrap_err().to_string();
    assert!(e.contains("s.jsonl:3: invalid JSON"), "{e}");
}

#[test]
fn gzip_is_transparent() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("d.jsonl.gz");
    let mut gz = flate2::write::GzEncoder::new(
        std::fs::File::create(&p).unwrap(),
        flate2::Compression::default(),
    );
    gz.write_all(MIXED.as_bytes()).unwrap();
    gz.finish().unwrap();
    let got = read_dataset(&p, Shape::Auto, &Fields::default()).unwrap();
    assert_eq!(got.len(), 3);
    assert_eq!(got[1], pc("2+2=", "4"));
}

#[test]
fn unknown_extension_and_missing_file_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("notes.txt");
    write(&p, "hi");
    let e = read_dataset(&p, Shape::Auto, &Fields::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("notes.txt") && e.contains("unknown dataset format"),
        "{e}"
    );
    let e = read_dataset(
        dir.path().join("nope.jsonl"),
        Shape::Auto,
        &Fields::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("nope.jsonl"), "{e}");
    let e = read_dataset(dir.path(), Shape::Auto, &Fields::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("no .jsonl"), "{e}");
}

// ---------------------------------------------------------------- Parquet (written with parquet's writer)

/// Write one row group; `write_cols` fills each column in schema order.
fn write_parquet(
    path: &Path,
    schema: &str,
    mut write_cols: impl FnMut(usize, &mut parquet::file::writer::SerializedColumnWriter<'_>),
) {
    let schema = Arc::new(parse_message_type(schema).unwrap());
    let props = Arc::new(WriterProperties::builder().build());
    let mut w =
        SerializedFileWriter::new(std::fs::File::create(path).unwrap(), schema, props).unwrap();
    let mut rg = w.next_row_group().unwrap();
    let mut i = 0;
    while let Some(mut col) = rg.next_column().unwrap() {
        write_cols(i, &mut col);
        col.close().unwrap();
        i += 1;
    }
    rg.close().unwrap();
    w.close().unwrap();
}

fn bytes(v: &[&str]) -> Vec<ByteArray> {
    v.iter().map(|s| ByteArray::from(*s)).collect()
}

#[test]
fn parquet_prompt_completion_and_errors_name_row_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("pc.parquet");
    let schema = "message schema { REQUIRED BYTE_ARRAY prompt (UTF8); OPTIONAL BYTE_ARRAY completion (UTF8); REQUIRED INT32 score; }";
    write_parquet(&p, schema, |i, col| match i {
        0 => {
            col.typed::<ByteArrayType>()
                .write_batch(&bytes(&["a", "b", "c"]), None, None)
                .unwrap();
        }
        1 => {
            // rows: "x", null, "z" -> definition levels 1, 0, 1
            col.typed::<ByteArrayType>()
                .write_batch(&bytes(&["x", "z"]), Some(&[1, 0, 1]), None)
                .unwrap();
        }
        _ => {
            col.typed::<Int32Type>()
                .write_batch(&[1, 2, 3], None, None)
                .unwrap();
        }
    });
    let e = read_parquet(&p, Shape::Auto, &Fields::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("pc.parquet: row 1: missing field \"completion\" (shape prompt/completion)"),
        "{e}"
    );

    // Row 0 comes out before the error when streaming.
    let first = iter_dataset(&p, Shape::Auto, &Fields::default())
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    assert_eq!(first, pc("a", "x"));

    // A non-string column read as text names the row and the field.
    let f = Fields {
        text: "score".into(),
        ..Fields::default()
    };
    let e = read_parquet(&p, Shape::Text, &f).unwrap_err().to_string();
    assert!(
        e.contains("row 0: field \"score\": expected a string, found number"),
        "{e}"
    );

    // No wanted column at all: the file's columns are listed.
    let f = Fields {
        text: "body".into(),
        prompt: "q".into(),
        completion: "a".into(),
        messages: "m".into(),
    };
    let e = read_parquet(&p, Shape::Auto, &f).unwrap_err().to_string();
    assert!(e.contains("columns: prompt, completion, score"), "{e}");
}

const CHAT_SCHEMA: &str = "message schema {
  OPTIONAL group messages (LIST) {
    REPEATED group list {
      OPTIONAL group element {
        OPTIONAL BYTE_ARRAY role (UTF8);
        OPTIONAL BYTE_ARRAY content (UTF8);
      }
    }
  }
}";

#[test]
fn parquet_chat_list_of_structs() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("chat.parquet");
    // Row 0: [user "hi", assistant "hello"]; row 1: [user "q"].
    // Levels for role/content: defined leaf = 4 (messages, list, element, leaf); a new row has rep 0.
    write_parquet(&p, CHAT_SCHEMA, |i, col| {
        let vals = if i == 0 {
            bytes(&["user", "assistant", "user"])
        } else {
            bytes(&["hi", "hello", "q"])
        };
        col.typed::<ByteArrayType>()
            .write_batch(&vals, Some(&[4, 4, 4]), Some(&[0, 1, 0]))
            .unwrap();
    });
    let got = read_parquet(&p, Shape::Auto, &Fields::default()).unwrap();
    assert_eq!(
        got,
        vec![
            chat(&[("user", "hi"), ("assistant", "hello")]),
            chat(&[("user", "q")])
        ]
    );

    // Second message's content is null (definition level 3: the struct exists, the leaf does not).
    let p2 = dir.path().join("chat_bad.parquet");
    write_parquet(&p2, CHAT_SCHEMA, |i, col| {
        if i == 0 {
            col.typed::<ByteArrayType>()
                .write_batch(&bytes(&["user", "assistant"]), Some(&[4, 4]), Some(&[0, 1]))
                .unwrap();
        } else {
            col.typed::<ByteArrayType>()
                .write_batch(&bytes(&["hi"]), Some(&[4, 3]), Some(&[0, 1]))
                .unwrap();
        }
    });
    let e = read_parquet(&p2, Shape::Chat, &Fields::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("chat_bad.parquet: row 0: field \"messages\": message 1: missing \"content\""),
        "{e}"
    );
}

#[test]
fn parquet_chat_as_json_string_column() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("chat_json.parquet");
    write_parquet(
        &p,
        "message schema { REQUIRED BYTE_ARRAY conversation (UTF8); }",
        |_, col| {
            let rows = [
                r#"[{"role": "system", "content": "be brief"}, {"role": "user", "content": "?"}]"#,
                "not json",
            ];
            col.typed::<ByteArrayType>()
                .write_batch(&bytes(&rows), None, None)
                .unwrap();
        },
    );
    let f = Fields {
        messages: "conversation".into(),
        ..Fields::default()
    };
    let mut it = iter_dataset(&p, Shape::Auto, &f).unwrap();
    assert_eq!(
        it.next().unwrap().unwrap(),
        chat(&[("system", "be brief"), ("user", "?")])
    );
    let e = it.next().unwrap().unwrap_err().to_string();
    assert!(
        e.contains("row 1: field \"conversation\": a string that is not a JSON list"),
        "{e}"
    );
}

#[test]
fn directory_reads_known_files_in_sorted_order() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("b")).unwrap();
    write(
        &d.join("c.json"),
        "  [{\"text\": \"c0\"}, {\"text\": \"c1\"}]",
    );
    write(&d.join("a.jsonl"), "{\"text\": \"a0\"}\n");
    write(&d.join("README.md"), "not data");
    write(&d.join(".hidden.jsonl"), "garbage");
    write(
        &d.join("d.json"),
        "{\"text\": \"d0\"}\n{\"text\": \"d1\"}\n",
    ); // .json holding JSON lines
    write_parquet(
        &d.join("b").join("part-0.parquet"),
        "message schema { REQUIRED BYTE_ARRAY text (UTF8); }",
        |_, col| {
            col.typed::<ByteArrayType>()
                .write_batch(&bytes(&["b0"]), None, None)
                .unwrap();
        },
    );
    let got = read_dataset(d, Shape::Auto, &Fields::default()).unwrap();
    let texts: Vec<&str> = got
        .iter()
        .map(|e| match e {
            Example::Text { text } => text.as_str(),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    // a.jsonl < b/part-0.parquet < c.json < d.json
    assert_eq!(texts, ["a0", "b0", "c0", "c1", "d0", "d1"]);

    write(&d.join("c.json"), "[{\"text\": \"c0\"}, {\"txt\": \"c1\"}]");
    let e = read_dataset(d, Shape::Text, &Fields::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("c.json: element 1: missing field \"text\""),
        "{e}"
    );
}

#[test]
fn shape_and_fields_deserialize_from_config() {
    #[derive(serde::Deserialize)]
    struct Cfg {
        shape: Shape,
        fields: Fields,
    }
    let c: Cfg =
        serde_json::from_str(r#"{"shape": "prompt_completion", "fields": {"prompt": "q"}}"#)
            .unwrap();
    assert_eq!(c.shape, Shape::PromptCompletion);
    assert_eq!(c.fields.prompt, "q");
    assert_eq!(c.fields.completion, "completion");
    assert!(serde_json::from_str::<Fields>(r#"{"promt": "q"}"#).is_err());
}

/// `"*"` as the column list reads every column of a Parquet file (what `gradus data corrupt`
/// needs to keep a row's other fields); a named list still projects.
#[test]
fn parquet_star_reads_every_column() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("all.parquet");
    let schema = "message schema { REQUIRED BYTE_ARRAY text (UTF8); REQUIRED INT32 id; }";
    write_parquet(&p, schema, |i, col| match i {
        0 => {
            col.typed::<ByteArrayType>()
                .write_batch(&bytes(&["a", "b"]), None, None)
                .unwrap();
        }
        _ => {
            col.typed::<Int32Type>()
                .write_batch(&[7, 8], None, None)
                .unwrap();
        }
    });
    let keys = |cols: &[&str]| -> Vec<Vec<String>> {
        let parse: gradus_data::dataset::RowParser<Vec<String>> =
            Arc::new(|o| Ok(o.keys().cloned().collect()));
        let cols: Vec<String> = cols.iter().map(|s| s.to_string()).collect();
        gradus_data::dataset::iter_records(&p, &cols, parse)
            .unwrap()
            .collect::<gradus_tensor::Result<Vec<_>>>()
            .unwrap()
    };
    assert_eq!(keys(&["*"]), vec![vec!["id", "text"]; 2]);
    assert_eq!(keys(&["text"]), vec![vec!["text"]; 2]);
}
