//! The published hex vectors of the KMIP 1.0 Use Cases and 1.1 Test Cases, and captures of
//! PyKMIP's client and server (`testdata/vectors.tsv`): each decodes, reads into the typed
//! model, and writes back byte for byte; the typed values are the ones the documents state.

use kmip::enums::{CryptographicAlgorithm, KeyFormatType, ObjectType, Operation};
use kmip::message::{
    op::*, Credential, ManagedObject, ProtocolVersion, RequestMessage, RequestPayload,
    ResponseMessage, ResponsePayload,
};
use kmip::ttlv::{self, Tag, Value};

fn vectors() -> Vec<(String, Vec<u8>)> {
    include_str!("../testdata/vectors.tsv")
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (name, hex) = l.split_once('\t').expect("name<TAB>hex");
            (name.to_owned(), hex::decode(hex.trim()).expect("hex"))
        })
        .collect()
}

fn vector(prefix: &str) -> Vec<u8> {
    vectors()
        .into_iter()
        .find(|(n, _)| n.starts_with(prefix))
        .unwrap_or_else(|| panic!("no vector {prefix}"))
        .1
}

#[test]
fn every_vector_round_trips_byte_for_byte_through_items_and_typed_messages() {
    let all = vectors();
    assert_eq!(all.len(), 12);
    for (name, bytes) in all {
        let item = ttlv::decode(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(ttlv::encode(&item), bytes, "{name}: items");
        let typed = if item.tag == Tag::REQUEST_MESSAGE {
            RequestMessage::from_item(&item).unwrap().encode()
        } else {
            ResponseMessage::from_item(&item).unwrap().encode()
        };
        assert_eq!(typed, bytes, "{name}: typed model");
    }
}

#[test]
fn create_request_of_test_case_3_1_1_asks_for_aes_128_encrypt_decrypt() {
    let m = RequestMessage::from_item(&ttlv::decode(&vector("V1 ")).unwrap()).unwrap();
    assert_eq!(m.header.protocol_version, ProtocolVersion::V1_1);
    let RequestPayload::Create(c) = &m.items[0].payload else {
        panic!("not Create")
    };
    assert_eq!(c.object_type, ObjectType::SYMMETRIC_KEY);
    let a = &c.attributes;
    assert_eq!(
        a.get(Tag::CRYPTOGRAPHIC_ALGORITHM).unwrap().value,
        Value::Enumeration(3)
    );
    assert_eq!(
        a.get(Tag::CRYPTOGRAPHIC_LENGTH).unwrap().value,
        Value::Integer(128)
    );
    assert_eq!(
        a.get(Tag::CRYPTOGRAPHIC_USAGE_MASK).unwrap().value,
        Value::Integer(12)
    );
    let r = ResponseMessage::from_item(&ttlv::decode(&vector("V1r")).unwrap()).unwrap();
    let Some(ResponsePayload::Create(c)) = &r.items[0].payload else {
        panic!("not a Create response")
    };
    assert_eq!(c.unique_identifier, "fb4b5b9c-6188-4c63-8142-fe9c328129fc");
}

#[test]
fn get_response_of_use_case_4_1_carries_the_raw_aes_key() {
    let r = ResponseMessage::from_item(&ttlv::decode(&vector("V3 ")).unwrap()).unwrap();
    assert_eq!(r.header.time_stamp, Some(0x4AFB_ED2B));
    let Some(ResponsePayload::Get(GetResponse {
        object: ManagedObject::SymmetricKey(kb),
        unique_identifier,
        ..
    })) = &r.items[0].payload
    else {
        panic!("not a Get response with a symmetric key")
    };
    assert_eq!(unique_identifier, "21d28b8a-06df-43c0-b72f-2a161633ada9");
    assert_eq!(kb.format, KeyFormatType::RAW);
    assert_eq!(kb.algorithm, Some(CryptographicAlgorithm::AES));
    assert_eq!(kb.length, Some(128));
    assert_eq!(
        hex::encode(kb.symmetric_key().unwrap().as_slice()),
        "ef7833ab15f5a1ee5874bc0d9bbc4be7"
    );
    // Key bytes never reach Debug output.
    assert!(!format!("{r:?}").contains("ef7833ab"));
}

#[test]
fn discover_versions_of_test_case_16_1_lists_1_1_then_1_0() {
    let q = RequestMessage::from_item(&ttlv::decode(&vector("V4 ")).unwrap()).unwrap();
    assert_eq!(q.items[0].operation(), Operation::DISCOVER_VERSIONS);
    let r = ResponseMessage::from_item(&ttlv::decode(&vector("V4r")).unwrap()).unwrap();
    let Some(ResponsePayload::DiscoverVersions(d)) = &r.items[0].payload else {
        panic!("not Discover Versions")
    };
    assert_eq!(
        d.versions,
        vec![ProtocolVersion::V1_1, ProtocolVersion::V1_0]
    );
}

#[test]
fn pykmip_requests_carry_the_username_and_password_credential() {
    for name in ["V5 ", "V6q", "V7 "] {
        let m = RequestMessage::from_item(&ttlv::decode(&vector(name)).unwrap()).unwrap();
        let [Credential::UsernamePassword { username, password }] =
            m.header.authentication.as_slice()
        else {
            panic!("{name}: no username/password credential")
        };
        assert_eq!(username, "alice");
        assert_eq!(
            password.as_deref().map(String::as_str),
            Some("wrong-password")
        );
        assert!(
            !format!("{m:?}").contains("wrong-password"),
            "{name}: password in Debug"
        );
    }
    // The same Create in 2.0 (Attributes) and 1.2 (Template-Attribute) encodings reads
    // into the same attributes, and each writes back in its own encoding.
    let v2 = RequestMessage::from_item(&ttlv::decode(&vector("V5 ")).unwrap()).unwrap();
    let v1 = RequestMessage::from_item(&ttlv::decode(&vector("V7 ")).unwrap()).unwrap();
    let (RequestPayload::Create(a), RequestPayload::Create(b)) =
        (&v2.items[0].payload, &v1.items[0].payload)
    else {
        panic!("not Create")
    };
    assert_eq!(a.attributes, b.attributes);
    let mut as_v1 = v2.clone();
    as_v1.header.protocol_version = ProtocolVersion::V1_2;
    assert_eq!(as_v1.encode(), vector("V7 "));
}
