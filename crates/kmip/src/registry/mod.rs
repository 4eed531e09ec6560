//! The names of KMIP 1.0–2.1: tags, enumeration values and bit masks.
//!
//! The tables in `generated.rs` are extracted once from the OASIS specification HTML by
//! `tools/gen-registry.py` (no crate carries a complete, version-spanning registry; the
//! largest, Cosmian's, is BUSL-licensed), and checked against every name used in the OASIS
//! test cases. They serve the XML form and `Debug` output only: the binary codec never needs
//! a name, so an unknown tag or value is never an error on the wire.

mod generated;

use std::collections::HashMap;
use std::sync::OnceLock;

use generated::{EnumTable, ENUMS, MASKS, SPEC_NAMES, TAGS};

/// The XML name of tag `v`.
pub fn tag_name(v: u32) -> Option<&'static str> {
    let i = TAGS.partition_point(|&(t, _)| t < v);
    TAGS.get(i).filter(|&&(t, _)| t == v).map(|&(_, n)| n)
}

/// The tag called `name` (current or earlier-version name).
pub fn tag_by_name(name: &str) -> Option<u32> {
    static BY_NAME: OnceLock<HashMap<&'static str, u32>> = OnceLock::new();
    let map = BY_NAME.get_or_init(|| {
        let mut m = HashMap::with_capacity(TAGS.len());
        for &(v, n) in TAGS {
            m.entry(n).or_insert(v);
        }
        m
    });
    map.get(name).copied()
}

/// The enumeration whose values tag `tag` carries.
pub fn enumeration_for_tag(tag: u32) -> Option<Enumeration> {
    ENUMS
        .iter()
        .find(|e| e.tags.contains(&tag))
        .map(|table| Enumeration { table })
}

/// The enumeration called `name` (`CryptographicAlgorithm`).
pub fn enumeration_by_name(name: &str) -> Option<Enumeration> {
    let i = ENUMS.partition_point(|e| e.name < name);
    ENUMS
        .get(i)
        .filter(|e| e.name == name)
        .map(|table| Enumeration { table })
}

/// One enumeration table of the specification.
#[derive(Clone, Copy)]
pub struct Enumeration {
    table: &'static EnumTable,
}

impl Enumeration {
    /// The table's XML name.
    pub fn name(&self) -> &'static str {
        self.table.name
    }

    /// The canonical (newest) name of value `v`.
    pub fn value_name(&self, v: u32) -> Option<&'static str> {
        let values = self.table.values;
        let i = values.partition_point(|&(x, _)| x < v);
        values.get(i).filter(|&&(x, _)| x == v).map(|&(_, n)| n)
    }

    /// The value called `name`, under any version's name.
    pub fn value_by_name(&self, name: &str) -> Option<u32> {
        self.table
            .values
            .iter()
            .find(|&&(_, n)| n == name)
            .map(|&(v, _)| v)
    }
}

/// The named bits of the mask that tag `tag` carries in an Integer, as (bit, name).
pub fn mask_for_tag(tag: u32) -> Option<&'static [(u32, &'static str)]> {
    let i = MASKS.partition_point(|&(t, _)| t < tag);
    MASKS
        .get(i)
        .filter(|&&(t, _)| t == tag)
        .map(|&(_, bits)| bits)
}

/// The specification's spelling of tag `v` (`"Cryptographic Usage Mask"`): the text of a
/// KMIP 1.x Attribute Name.
pub fn attribute_name(v: u32) -> Option<&'static str> {
    let i = SPEC_NAMES.partition_point(|&(t, _)| t < v);
    SPEC_NAMES.get(i).filter(|&&(t, _)| t == v).map(|&(_, n)| n)
}

/// The tag that a KMIP 1.x Attribute Name denotes: `"Cryptographic Algorithm"` →
/// `CryptographicAlgorithm`. Custom attributes (`x-…`, `y-…`) have none.
pub fn tag_for_attribute_name(name: &str) -> Option<u32> {
    static BY_SPEC_NAME: OnceLock<HashMap<&'static str, u32>> = OnceLock::new();
    let map = BY_SPEC_NAME.get_or_init(|| SPEC_NAMES.iter().map(|&(v, n)| (n, v)).collect());
    map.get(name).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_sorted_for_binary_search() {
        assert!(TAGS.windows(2).all(|w| w[0].0 <= w[1].0));
        assert!(ENUMS.windows(2).all(|w| w[0].name < w[1].name));
        assert!(MASKS.windows(2).all(|w| w[0].0 < w[1].0));
        assert!(SPEC_NAMES.windows(2).all(|w| w[0].0 < w[1].0));
        for e in ENUMS {
            assert!(e.values.windows(2).all(|w| w[0].0 <= w[1].0), "{}", e.name);
        }
    }

    #[test]
    fn knows_the_names_a_data_at_rest_client_uses() {
        assert_eq!(tag_name(0x420028), Some("CryptographicAlgorithm"));
        assert_eq!(tag_by_name("TemplateAttribute"), Some(0x420091));
        assert_eq!(
            tag_for_attribute_name("Cryptographic Usage Mask"),
            Some(0x42002C)
        );
        assert_eq!(
            tag_for_attribute_name("X.509 Certificate Issuer"),
            Some(0x4200B6)
        );
        assert_eq!(attribute_name(0x42002C), Some("Cryptographic Usage Mask"));
        let alg = enumeration_for_tag(0x420028).unwrap();
        assert_eq!(alg.value_name(3), Some("AES"));
        assert_eq!(alg.value_by_name("AES"), Some(3));
        let op = enumeration_for_tag(0x42005C).unwrap();
        assert_eq!(op.value_name(0x1E), Some("DiscoverVersions"));
        let mask = mask_for_tag(0x42002C).unwrap();
        assert!(mask.contains(&(4, "Encrypt")) && mask.contains(&(8, "Decrypt")));
        assert_eq!(
            enumeration_by_name("ResultReason").unwrap().value_name(1),
            Some("ItemNotFound")
        );
    }
}
