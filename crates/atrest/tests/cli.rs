//! The real `atrest` binary, run as an operator would.

use std::io::Write;
use std::process::{Command, Output, Stdio};

const GET_REQUEST_1_1: &str = "42007801000000904200770100000038420069010000002042006a0200000004000000010000000042006b0200000004000000010000000042000d0200000004000000010000000042000f010000004842005c05000000040000000a000000004200790100000030420094070000002434396131636138382d366265612d346662322d623435302d37653538383032633330333800000000";

fn atrest(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_atrest"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn ttlv_decode_then_encode_gives_back_the_same_hex() {
    let decoded = atrest(&["ttlv", "decode"], GET_REQUEST_1_1.as_bytes());
    assert!(decoded.status.success(), "{}", text(&decoded.stderr));
    let xml = text(&decoded.stdout);
    assert!(
        xml.contains(r#"<Operation type="Enumeration" value="Get"/>"#),
        "{xml}"
    );
    assert!(xml.contains(r#"value="49a1ca88-6bea-4fb2-b450-7e58802c3038""#));
    let encoded = atrest(&["ttlv", "encode", "-"], xml.as_bytes());
    assert!(encoded.status.success(), "{}", text(&encoded.stderr));
    assert_eq!(text(&encoded.stdout).trim(), GET_REQUEST_1_1);
}

#[test]
fn ttlv_decode_reads_binary_and_several_messages_from_a_file() {
    let bin = hex::decode(GET_REQUEST_1_1).unwrap();
    let dir = tempfile::Builder::new()
        .prefix("atrest-cli-")
        .tempdir()
        .unwrap();
    let f = dir.path().join("capture.bin");
    std::fs::write(&f, [bin.clone(), bin].concat()).unwrap();
    let out = atrest(&["ttlv", "decode", f.to_str().unwrap()], b"");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let xml = text(&out.stdout);
    assert!(xml.starts_with("<KMIP>"));
    assert_eq!(xml.matches("<RequestMessage>").count(), 2);
    // And back: one hex line per message.
    let back = atrest(&["ttlv", "encode"], xml.as_bytes());
    assert_eq!(
        text(&back.stdout).lines().collect::<Vec<_>>(),
        vec![GET_REQUEST_1_1; 2]
    );
}

#[test]
fn ttlv_decode_names_the_offset_of_malformed_input_and_fails() {
    // The Get request with one padding byte of the Unique Identifier set.
    let mut bad = hex::decode(GET_REQUEST_1_1).unwrap();
    let last = bad.len() - 1;
    bad[last] = 1;
    let out = atrest(&["ttlv", "decode"], hex::encode(&bad).as_bytes());
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("non-zero padding byte at byte 151"), "{err}");

    let out = atrest(&["ttlv", "decode"], b"420078010000ffff");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("declares"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn ttlv_encode_explains_an_unknown_element() {
    let out = atrest(
        &["ttlv", "encode"],
        br#"<Frobnicate type="Integer" value="1"/>"#,
    );
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("unknown tag name <Frobnicate>"), "{err}");
    assert!(err.contains("TTLV tag="), "{err}");
}

#[test]
fn a_closed_pipe_on_stdout_is_not_an_error() {
    // 200 messages of XML into a reader that goes away at once.
    let hexes = vec![GET_REQUEST_1_1; 200].join("");
    let mut child = Command::new(env!("CARGO_BIN_EXE_atrest"))
        .args(["ttlv", "decode"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    child
        .stdin
        .take()
        .unwrap()
        .write_all(hexes.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn bad_usage_exits_with_status_2() {
    let out = atrest(&["ttlv", "transmogrify"], b"");
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn ttlv_decode_redacts_key_material_unless_asked() {
    let hex = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../kmip/testdata/get-response-1.2.hex"
    ))
    .unwrap();
    let key = "2655e6facec9cb183728f8bca8b94ed8fb027faba20b6cdf68a1cde80fd5ece4";
    let out = atrest(&["ttlv", "decode"], hex.as_bytes());
    assert!(out.status.success());
    let xml = text(&out.stdout);
    assert!(!xml.contains(key) && xml.contains("$REDACTED"), "{xml}");
    // A redacted document cannot be encoded back into a message with a wrong key.
    let back = atrest(&["ttlv", "encode"], xml.as_bytes());
    assert_eq!(back.status.code(), Some(1));

    let out = atrest(&["ttlv", "decode", "--reveal-secrets"], hex.as_bytes());
    let xml = text(&out.stdout);
    assert!(xml.contains(key));
    let back = atrest(&["ttlv", "encode"], xml.as_bytes());
    let flat: String = hex.split_whitespace().collect();
    assert_eq!(text(&back.stdout).trim(), flat);
}

#[test]
fn demo_runs_the_story_on_the_embedded_server_and_cleans_up() {
    let out = atrest(&["demo"], b"");
    let text = text(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", text_err(&out));
    assert!(text.contains("Save and Test: OK"), "{text}");
    for step in ["create", "activate", "get", "revoke", "destroy"] {
        assert!(
            text.contains(&format!("probe key     {step}: ok")),
            "{text}"
        );
    }
    let dir = text
        .split("directory ")
        .nth(1)
        .and_then(|s| s.lines().next())
        .unwrap()
        .trim();
    assert!(!std::path::Path::new(dir).exists(), "{dir} left behind");
}

fn text_err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}
