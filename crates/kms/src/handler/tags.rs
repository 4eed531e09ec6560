//! The attribute tags the handler needs that the kmip crate has no constant for.
//!
//! The kmip crate names as constants only the tags its message layer needs and leaves the
//! rest to its registry, generated from the specification, so these numbers are looked up
//! there by name rather than copied from memory. Each is looked up once, here, and the
//! tests below resolve every one, so a name missing from the registry fails `cargo test`
//! instead of panicking on a request.

use std::sync::LazyLock;

use kmip::ttlv::Tag;

fn registry(name: &str) -> Tag {
    Tag::from_name(name).unwrap_or_else(|| panic!("registry lacks {name}"))
}

macro_rules! registry_tags {
    ($($constant:ident = $name:literal,)*) => {
        $(
            pub(super) static $constant: LazyLock<Tag> = LazyLock::new(|| registry($name));
        )*
        #[cfg(test)]
        const ALL: &[(&LazyLock<Tag>, &str)] = &[$((&$constant, $name),)*];
    };
}

registry_tags! {
    ALTERNATIVE_NAME = "AlternativeName",
    APPLICATION_SPECIFIC_INFORMATION = "ApplicationSpecificInformation",
    COMPROMISE_DATE = "CompromiseDate",
    DEACTIVATION_DATE = "DeactivationDate",
    DESTROY_DATE = "DestroyDate",
    DIGEST = "Digest",
    DIGEST_VALUE = "DigestValue",
    HASHING_ALGORITHM = "HashingAlgorithm",
    INITIAL_DATE = "InitialDate",
    LAST_CHANGE_DATE = "LastChangeDate",
    LINK = "Link",
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tag_resolves_to_the_one_the_registry_names_so() {
        let mut seen = Vec::new();
        for (tag, name) in ALL {
            let tag: Tag = ***tag;
            // Back to the same name: the attribute rules compare tags where the code they
            // replace compared names, which is only the same while the mapping is 1:1.
            assert_eq!(tag.name(), Some(*name));
            assert!(!tag.is_extension(), "{name} is a specification tag");
            assert!(!seen.contains(&tag), "{name} duplicates another tag");
            seen.push(tag);
        }
        assert_eq!(*LAST_CHANGE_DATE, Tag::new(0x420048).unwrap());
        assert_eq!(*DIGEST, Tag::new(0x420034).unwrap());
    }
}
