//! Properties checked by the cargo-fuzz targets in `fuzz/` and, on fixed inputs, by the
//! ordinary test suite (so the hook cannot rot unbuilt, the failure sled's notes warn of).
//!
//! Each function panics when a property breaks; on malformed input it must simply return.

use crate::message::{RequestMessage, ResponseMessage};
use crate::ttlv::{self, xml, Tag};

/// Decodes `data` as TTLV. Malformed input must be an error, not a panic. When it decodes:
/// encoding gives back exactly `data` (the codec is strict, so there is one encoding); the
/// XML form reads back to the same items; and the typed message model reaches a fixed point
/// after one read-write cycle.
pub fn ttlv_roundtrip(data: &[u8]) {
    let Ok(item) = ttlv::decode(data) else {
        return;
    };
    assert_eq!(
        ttlv::encode(&item),
        data,
        "decode-then-encode changed the bytes"
    );
    // XML 1.0 cannot carry U+0000 even as a character reference, so a Text String holding
    // one has no XML form (the reader refuses it with an error); TTLV alone must do there.
    if contains_nul_text(&item) {
        return typed_fixed_point(&item);
    }
    let text = xml::to_xml(&item);
    let back = xml::from_xml(&text).unwrap_or_else(|e| panic!("own XML not readable: {e}\n{text}"));
    assert_eq!(back, item, "XML round trip changed the items:\n{text}");
    typed_fixed_point(&item);
}

fn typed_fixed_point(item: &crate::ttlv::Item) {
    if item.tag == Tag::REQUEST_MESSAGE {
        if let Ok(m) = RequestMessage::from_item(item) {
            let once = m.to_item();
            let again = RequestMessage::from_item(&once).expect("own request unreadable");
            assert_eq!(again.to_item(), once, "request model not at a fixed point");
        }
    } else if item.tag == Tag::RESPONSE_MESSAGE {
        if let Ok(m) = ResponseMessage::from_item(item) {
            let once = m.to_item();
            let again = ResponseMessage::from_item(&once).expect("own response unreadable");
            assert_eq!(again.to_item(), once, "response model not at a fixed point");
        }
    }
}

/// Reads `data` as the XML form. Malformed text must be an error, not a panic; what reads
/// must survive TTLV encoding and decoding unchanged.
pub fn xml_read(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(items) = xml::from_xml_document(text, None) else {
        return;
    };
    for item in items {
        let bytes = ttlv::encode(&item);
        // Depth is bounded by the XML reader too, so the default limits always admit it,
        // unless the XML held more than a megabyte of values.
        if bytes.len() <= ttlv::limits::MAX_MESSAGE_LEN {
            assert_eq!(ttlv::decode(&bytes).expect("own TTLV unreadable"), item);
        }
    }
}

fn contains_nul_text(item: &crate::ttlv::Item) -> bool {
    match &item.value {
        crate::ttlv::Value::TextString(s) => s.contains('\0'),
        crate::ttlv::Value::Structure(c) => c.iter().any(contains_nul_text),
        _ => false,
    }
}
