//! The OASIS KMIP profile test cases as a conformance suite for the codec and message model
//! (the role BoGo plays for rustls).
//!
//! Every request and response in `testdata/kmip/testcases/v*/{mandatory,optional}/*.xml`:
//! 1. parses from the XML form (placeholders such as `$NOW` substituted first),
//! 2. encodes to TTLV, decodes back to the same items and re-encodes to the same bytes,
//! 3. prints as XML equal to the original, compared element by element with a reader that
//!    does not use the registry (so a naming bug cannot cancel itself out); "equal" allows
//!    only what the XML form leaves free: whitespace, hex case, mask name order, and the
//!    UTC offset of a date-time (TTLV holds the instant; atrest prints it in UTC),
//! 4. reads into the typed message model and writes back to the identical item tree.
//!
//! The suite is the copy in the repository (`testdata/kmip/testcases`, see
//! `testdata/kmip/README.md`); `$KMIP_TESTCASES` points the test at another copy. A missing
//! suite is a failure, never a skip.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kmip::message::{RequestMessage, RequestPayload, ResponseMessage, ResponsePayload};
use kmip::ttlv::{self, xml, Item, ItemType, Tag};

/// The instant `$NOW` stands for: 2026-01-01T00:00:00Z.
const NOW: i64 = 1_767_225_600;

fn suite_dir() -> PathBuf {
    let d = std::env::var_os("KMIP_TESTCASES").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/kmip/testcases"),
        PathBuf::from,
    );
    assert!(
        d.is_dir(),
        "KMIP test cases not found at {}: the repository keeps them in testdata/kmip/testcases \
         ($KMIP_TESTCASES overrides)",
        d.display()
    );
    d
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for version in std::fs::read_dir(dir).unwrap() {
        let version = version.unwrap().path();
        for kind in ["mandatory", "optional"] {
            let Ok(rd) = std::fs::read_dir(version.join(kind)) else {
                continue;
            };
            for f in rd {
                let f = f.unwrap().path();
                if f.extension().is_some_and(|e| e == "xml") {
                    out.push(f);
                }
            }
        }
    }
    out.sort();
    out
}

/// Placeholder values: `$NOW±N` as a date-time, other placeholders in Byte Strings as
/// bytes derived from the name. Text placeholders (`$UNIQUE_IDENTIFIER_0`) are valid text.
fn substitute(t: ItemType, v: &str) -> Option<String> {
    match t {
        ItemType::DateTime => {
            let rest = v.strip_prefix("$NOW")?;
            let offset: i64 = if rest.is_empty() {
                0
            } else {
                rest.parse().ok()?
            };
            let t = time::OffsetDateTime::from_unix_timestamp(NOW + offset).ok()?;
            let s = t
                .format(&time::format_description::well_known::Rfc3339)
                .ok()?;
            Some(s.replace('Z', "+00:00"))
        }
        ItemType::ByteString => Some(hex::encode(v.as_bytes())),
        _ => None,
    }
}

/// A registry-free view of an XML element: name, attributes, children.
#[derive(Debug)]
struct Node {
    name: String,
    attrs: BTreeMap<String, String>,
    children: Vec<Node>,
}

fn dom(text: &str) -> Vec<Node> {
    use quick_xml::events::Event;
    let mut r = quick_xml::Reader::from_str(text);
    r.config_mut().trim_text(true);
    let root = Node {
        name: String::new(),
        attrs: BTreeMap::new(),
        children: vec![],
    };
    let mut stack: Vec<Node> = vec![root];
    loop {
        let ev = r.read_event().unwrap();
        let (start, e) = match &ev {
            Event::Start(e) => (true, e),
            Event::Empty(e) => (false, e),
            Event::End(_) => {
                let n = stack.pop().unwrap();
                stack.last_mut().unwrap().children.push(n);
                continue;
            }
            Event::Eof => break,
            _ => continue,
        };
        let mut attrs = BTreeMap::new();
        for a in e.attributes() {
            let a = a.unwrap();
            attrs.insert(
                String::from_utf8(a.key.as_ref().to_vec()).unwrap(),
                a.unescape_value().unwrap().into_owned(),
            );
        }
        let n = Node {
            name: String::from_utf8(e.name().as_ref().to_vec()).unwrap(),
            attrs,
            children: vec![],
        };
        if start {
            stack.push(n);
        } else {
            stack.last_mut().unwrap().children.push(n);
        }
    }
    let mut top = stack.pop().unwrap().children;
    // Look through the <KMIP>/<KmipTestCase> wrapper.
    if top.len() == 1 && matches!(top[0].name.as_str(), "KMIP" | "KmipTestCase") {
        top = top.pop().unwrap().children;
    }
    top
}

/// Compares the original element `a` with the printed `b`; returns the first difference.
fn same(a: &Node, b: &Node, path: &str) -> Result<(), String> {
    let path = format!("{path}/{}", a.name);
    if a.name != b.name {
        return Err(format!("{path}: element {} printed as {}", a.name, b.name));
    }
    let ty = a.attrs.get("type").map_or("Structure", String::as_str);
    let ty_b = b.attrs.get("type").map_or("Structure", String::as_str);
    if ty != ty_b {
        return Err(format!("{path}: type {ty} printed as {ty_b}"));
    }
    let tag_a = a.attrs.get("tag").map(|t| t.to_lowercase());
    if tag_a != b.attrs.get("tag").map(|t| t.to_lowercase()) {
        return Err(format!("{path}: tag attribute differs"));
    }
    let t = ItemType::from_xml_name(ty).ok_or_else(|| format!("{path}: unknown type {ty}"))?;
    if t == ItemType::Structure {
        if a.children.len() != b.children.len() {
            return Err(format!(
                "{path}: {} children printed as {}",
                a.children.len(),
                b.children.len()
            ));
        }
        for (x, y) in a.children.iter().zip(&b.children) {
            same(x, y, &path)?;
        }
        return Ok(());
    }
    let raw = a.attrs.get("value").cloned().unwrap_or_default();
    let va = match raw.starts_with('$') {
        true => substitute(t, &raw).unwrap_or(raw),
        false => raw,
    };
    let vb = b.attrs.get("value").cloned().unwrap_or_default();
    let equal = match t {
        ItemType::ByteString | ItemType::BigInteger | ItemType::Enumeration => {
            va.eq_ignore_ascii_case(&vb)
        }
        ItemType::Integer => {
            let mut x: Vec<&str> = va.split_whitespace().collect();
            let mut y: Vec<&str> = vb.split_whitespace().collect();
            x.sort_unstable();
            y.sort_unstable();
            x == y
        }
        // TTLV carries an instant, not an offset: "+10:00" prints back as UTC.
        ItemType::DateTime | ItemType::DateTimeExtended => {
            let rfc = time::format_description::well_known::Rfc3339;
            match (
                time::OffsetDateTime::parse(&va, &rfc),
                time::OffsetDateTime::parse(&vb, &rfc),
            ) {
                (Ok(x), Ok(y)) => x == y && vb.ends_with("+00:00"),
                _ => false,
            }
        }
        _ => va == vb,
    };
    if equal {
        Ok(())
    } else {
        Err(format!("{path}: value {va:?} printed as {vb:?}"))
    }
}

#[derive(Default)]
struct Tally {
    files: usize,
    messages: usize,
    typed_exact: usize,
    /// Batch items whose operation has a typed payload (not `Other`).
    typed_items: usize,
    /// Of those, items with payload fields the model does not name (kept as `extra`).
    with_extra: usize,
    /// Batch items of operations the model leaves untyped (crypto, key pairs, ...).
    untyped_items: usize,
}

#[test]
fn every_oasis_test_case_round_trips_through_ttlv_xml_and_the_message_model() {
    let dir = suite_dir();
    let files = files(&dir);
    assert!(
        files.len() > 300,
        "expected the whole OASIS suite, found {} files",
        files.len()
    );
    let mut per_version: BTreeMap<String, Tally> = BTreeMap::new();
    let mut failures = Vec::new();
    let mut typed_failures = Vec::new();
    for f in &files {
        let rel = f.strip_prefix(&dir).unwrap().display().to_string();
        let version = rel.split('/').next().unwrap().to_owned();
        let text = std::fs::read_to_string(f).unwrap();
        let tally = per_version.entry(version).or_default();
        tally.files += 1;
        let items = match xml::from_xml_document(&text, Some(&substitute)) {
            Ok(items) => items,
            Err(e) => {
                failures.push(format!("{rel}: XML not read: {e}"));
                continue;
            }
        };
        let originals = dom(&text);
        if originals.len() != items.len() {
            failures.push(format!(
                "{rel}: {} messages in the file, {} read",
                originals.len(),
                items.len()
            ));
            continue;
        }
        for (i, (item, original)) in items.iter().zip(&originals).enumerate() {
            tally.messages += 1;
            let bytes = ttlv::encode(item);
            let back = match ttlv::decode(&bytes) {
                Ok(b) => b,
                Err(e) => {
                    failures.push(format!("{rel} message {i}: TTLV not decoded: {e}"));
                    continue;
                }
            };
            if &back != item || ttlv::encode(&back) != bytes {
                failures.push(format!("{rel} message {i}: TTLV round trip changed it"));
                continue;
            }
            let printed = xml::to_xml(&back);
            let reprinted = dom(&printed);
            if let Err(e) = same(original, &reprinted[0], "") {
                failures.push(format!("{rel} message {i}: {e}"));
                continue;
            }
            match typed_round_trip(&back, tally) {
                Ok(()) => tally.typed_exact += 1,
                Err(e) => typed_failures.push(format!("{rel} message {i}: {e}")),
            }
        }
    }
    println!("version  files  messages  typed-exact  typed-items  with-extra  untyped-items");
    for (v, t) in &per_version {
        println!(
            "{v:7}  {:5}  {:8}  {:11}  {:11}  {:10}  {:13}",
            t.files, t.messages, t.typed_exact, t.typed_items, t.with_extra, t.untyped_items
        );
    }
    let total: usize = per_version.values().map(|t| t.messages).sum();
    println!(
        "{total} messages; {} failed the codec round trip; {} not exact in the typed model",
        failures.len(),
        typed_failures.len()
    );
    for f in &typed_failures {
        println!("typed: {f}");
    }
    assert!(
        failures.is_empty(),
        "codec failures:\n{}",
        failures.join("\n")
    );
    assert!(
        typed_failures.is_empty(),
        "typed model failures:\n{}",
        typed_failures.join("\n")
    );
}

fn typed_round_trip(item: &Item, tally: &mut Tally) -> Result<(), String> {
    let mut count = |typed: bool, extra: bool| {
        if typed {
            tally.typed_items += 1;
            tally.with_extra += usize::from(extra);
        } else {
            tally.untyped_items += 1;
        }
    };
    let rewritten = if item.tag == Tag::REQUEST_MESSAGE {
        let m = RequestMessage::from_item(item).map_err(|e| e.to_string())?;
        for bi in &m.items {
            count(
                !matches!(bi.payload, RequestPayload::Other(..)),
                !bi.extra.is_empty(),
            );
        }
        m.to_item()
    } else {
        let m = ResponseMessage::from_item(item).map_err(|e| e.to_string())?;
        for bi in &m.items {
            match &bi.payload {
                Some(ResponsePayload::Other(..)) => count(false, false),
                Some(_) => count(true, !bi.extra.is_empty()),
                None => {}
            }
        }
        m.to_item()
    };
    if &rewritten == item {
        Ok(())
    } else {
        Err(first_difference(item, &rewritten, ""))
    }
}

fn first_difference(a: &Item, b: &Item, path: &str) -> String {
    let path = format!("{path}/{}", a.tag);
    if a.tag != b.tag {
        return format!("{path}: written as {}", b.tag);
    }
    let (ca, cb) = (a.children(), b.children());
    if ca.is_empty() && cb.is_empty() {
        return format!("{path}: {:?} written as {:?}", a.value, b.value);
    }
    for (x, y) in ca.iter().zip(cb) {
        if x != y {
            return first_difference(x, y, &path);
        }
    }
    format!(
        "{path}: fields {:?} written as {:?}",
        ca.iter().map(|i| i.tag).collect::<Vec<_>>(),
        cb.iter().map(|i| i.tag).collect::<Vec<_>>()
    )
}
