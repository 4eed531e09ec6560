#!/usr/bin/env python3
"""Generate crates/kmip/src/registry/generated.rs from the OASIS KMIP specifications.

Why: the XML form of KMIP and `Debug` output need the name of every tag, enumeration value
and mask bit of KMIP 1.0 to 2.1; typing ~1400 names by hand invites mistakes, so they are
read from the specification itself and checked against the OASIS test cases.

How (stdlib only), from the repository root:
    python3 tools/gen-registry.py > crates/kmip/src/registry/generated.rs
    python3 tools/gen-registry.py --check
    python3 tools/gen-registry.py --spec DIR --check DIR   # other folders (defaults below)
    python3 tools/gen-registry.py --extract HTML_DIR testdata/kmip/spec

The specification is read from testdata/kmip/spec/ (--spec DIR): for each of KMIP 1.0, 1.4
and 2.1, the extract kmip-spec-*-os.tables.txt if the folder has it, else the OASIS HTML
(kmip-spec-1.0-os.html, kmip-spec-v1.4-os.html, kmip-spec-v2.1-os.html). An extract holds
the document's front matter and notices, and the tables this generator reads, each with its
section heading and caption, exactly as the parser below sees them in the HTML; --extract
writes the extracts from the HTML, and both give the same registry. --check reads the test
cases from testdata/kmip/testcases/ (--check DIR).

The tag table, every "... Enumeration" table and the three mask tables of each version are
merged; where a value's name changed, the newest comes first and older names follow with
the same value. Range, "(Reserved)", "(Unused)" and "Extensions" rows are dropped.
Names follow "Normalizing Names" of the KMIP Profiles (XML/JSON encodings), as the test
cases do: '(' and ')' become spaces; a non-word character before a letter and a lower-case
letter becomes a space (Template-Attribute -> TemplateAttribute); any other non-word
character becomes '_' (SHA-256 -> SHA_256, PKCS#1 -> PKCS_1, X.509 -> X_509); leading
digits move to the end of the first word (3DES -> DES3); words are capitalised and joined.
An enumeration applies to the tag of its name and to the tags the specification points at
it ("Enumeration, see 9.1.3.2.16", "Enumeration (Item Type)", "encoding descriptions").
The PKCS#11 Function and Return Code enumerations, which KMIP 2.1 defines only by reference
to CK_FUNCTION_LIST_3_0 and CK_RV, are listed below from the OASIS PKCS#11 3.0 headers.
--check reports every test-case name that does not resolve and exits 1 if there is one.
"""

import argparse
import html.parser
import json
import os
import re
import sys
import textwrap
import xml.etree.ElementTree as ET

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPEC_DIR = os.path.join(ROOT, "testdata", "kmip", "spec")
CASES_DIR = os.path.join(ROOT, "testdata", "kmip", "testcases")

# (version, OASIS HTML file, in-repo extract of it)
SPEC_FILES = [
    ("1.0", "kmip-spec-1.0-os.html", "kmip-spec-1.0-os.tables.txt"),
    ("1.4", "kmip-spec-v1.4-os.html", "kmip-spec-v1.4-os.tables.txt"),
    ("2.1", "kmip-spec-v2.1-os.html", "kmip-spec-v2.1-os.tables.txt"),
]

MASK_HEADINGS = {"Cryptographic Usage Mask", "Storage Status Mask", "Protection Storage Mask"}

# Misprints in a specification table: (table, normalised name) -> the name the test cases
# (and the earlier versions) use. The misprint is kept after it as an alias.
ERRATA = {
    ("MaskGenerator", "MFG1"): "MGF1",  # 2.1 table 11.30; 1.4 and all test cases say MGF1
}

# PKCS#11 v3.0 CK_FUNCTION_LIST_3_0, in order (pkcs11f.h); value = 1-based position.
PKCS11_FUNCTIONS = """
C_Initialize C_Finalize C_GetInfo C_GetFunctionList C_GetSlotList C_GetSlotInfo
C_GetTokenInfo C_GetMechanismList C_GetMechanismInfo C_InitToken C_InitPIN C_SetPIN
C_OpenSession C_CloseSession C_CloseAllSessions C_GetSessionInfo C_GetOperationState
C_SetOperationState C_Login C_Logout C_CreateObject C_CopyObject C_DestroyObject
C_GetObjectSize C_GetAttributeValue C_SetAttributeValue C_FindObjectsInit C_FindObjects
C_FindObjectsFinal C_EncryptInit C_Encrypt C_EncryptUpdate C_EncryptFinal C_DecryptInit
C_Decrypt C_DecryptUpdate C_DecryptFinal C_DigestInit C_Digest C_DigestUpdate C_DigestKey
C_DigestFinal C_SignInit C_Sign C_SignUpdate C_SignFinal C_SignRecoverInit C_SignRecover
C_VerifyInit C_Verify C_VerifyUpdate C_VerifyFinal C_VerifyRecoverInit C_VerifyRecover
C_DigestEncryptUpdate C_DecryptDigestUpdate C_SignEncryptUpdate C_DecryptVerifyUpdate
C_GenerateKey C_GenerateKeyPair C_WrapKey C_UnwrapKey C_DeriveKey C_SeedRandom
C_GenerateRandom C_GetFunctionStatus C_CancelFunction C_WaitForSlotEvent
C_GetInterfaceList C_GetInterface C_LoginUser C_SessionCancel C_MessageEncryptInit
C_EncryptMessage C_EncryptMessageBegin C_EncryptMessageNext C_MessageEncryptFinal
C_MessageDecryptInit C_DecryptMessage C_DecryptMessageBegin C_DecryptMessageNext
C_MessageDecryptFinal C_MessageSignInit C_SignMessage C_SignMessageBegin C_SignMessageNext
C_MessageSignFinal C_MessageVerifyInit C_VerifyMessage C_VerifyMessageBegin
C_VerifyMessageNext C_MessageVerifyFinal
""".split()

# PKCS#11 v3.0 CK_RV values (pkcs11t.h), CKR_ prefix dropped.
PKCS11_RETURN_CODES = """
00 OK 01 CANCEL 02 HOST_MEMORY 03 SLOT_ID_INVALID 05 GENERAL_ERROR 06 FUNCTION_FAILED
07 ARGUMENTS_BAD 08 NO_EVENT 09 NEED_TO_CREATE_THREADS 0A CANT_LOCK
10 ATTRIBUTE_READ_ONLY 11 ATTRIBUTE_SENSITIVE 12 ATTRIBUTE_TYPE_INVALID
13 ATTRIBUTE_VALUE_INVALID 1B ACTION_PROHIBITED 20 DATA_INVALID 21 DATA_LEN_RANGE
30 DEVICE_ERROR 31 DEVICE_MEMORY 32 DEVICE_REMOVED 40 ENCRYPTED_DATA_INVALID
41 ENCRYPTED_DATA_LEN_RANGE 50 FUNCTION_CANCELED 51 FUNCTION_NOT_PARALLEL
54 FUNCTION_NOT_SUPPORTED 60 KEY_HANDLE_INVALID 62 KEY_SIZE_RANGE
63 KEY_TYPE_INCONSISTENT 64 KEY_NOT_NEEDED 65 KEY_CHANGED 66 KEY_NEEDED
67 KEY_INDIGESTIBLE 68 KEY_FUNCTION_NOT_PERMITTED 69 KEY_NOT_WRAPPABLE
6A KEY_UNEXTRACTABLE 70 MECHANISM_INVALID 71 MECHANISM_PARAM_INVALID
82 OBJECT_HANDLE_INVALID 90 OPERATION_ACTIVE 91 OPERATION_NOT_INITIALIZED
A0 PIN_INCORRECT A1 PIN_INVALID A2 PIN_LEN_RANGE A3 PIN_EXPIRED A4 PIN_LOCKED
B0 SESSION_CLOSED B1 SESSION_COUNT B3 SESSION_HANDLE_INVALID
B4 SESSION_PARALLEL_NOT_SUPPORTED B5 SESSION_READ_ONLY B6 SESSION_EXISTS
B7 SESSION_READ_ONLY_EXISTS B8 SESSION_READ_WRITE_SO_EXISTS C0 SIGNATURE_INVALID
C1 SIGNATURE_LEN_RANGE D0 TEMPLATE_INCOMPLETE D1 TEMPLATE_INCONSISTENT
E0 TOKEN_NOT_PRESENT E1 TOKEN_NOT_RECOGNIZED E2 TOKEN_WRITE_PROTECTED
F0 UNWRAPPING_KEY_HANDLE_INVALID F1 UNWRAPPING_KEY_SIZE_RANGE
F2 UNWRAPPING_KEY_TYPE_INCONSISTENT 100 USER_ALREADY_LOGGED_IN 101 USER_NOT_LOGGED_IN
102 USER_PIN_NOT_INITIALIZED 103 USER_TYPE_INVALID 104 USER_ANOTHER_ALREADY_LOGGED_IN
105 USER_TOO_MANY_TYPES 110 WRAPPED_KEY_INVALID 112 WRAPPED_KEY_LEN_RANGE
113 WRAPPING_KEY_HANDLE_INVALID 114 WRAPPING_KEY_SIZE_RANGE
115 WRAPPING_KEY_TYPE_INCONSISTENT 120 RANDOM_SEED_NOT_SUPPORTED 121 RANDOM_NO_RNG
130 DOMAIN_PARAMS_INVALID 140 CURVE_NOT_SUPPORTED 150 BUFFER_TOO_SMALL
160 SAVED_STATE_INVALID 170 INFORMATION_SENSITIVE 180 STATE_UNSAVEABLE
190 CRYPTOKI_NOT_INITIALIZED 191 CRYPTOKI_ALREADY_INITIALIZED 1A0 MUTEX_BAD
1A1 MUTEX_NOT_LOCKED 1B0 NEW_PIN_MODE 1B1 NEXT_OTP 1B5 EXCEEDED_MAX_ITERATIONS
1B6 FIPS_SELF_TEST_FAILED 1B7 LIBRARY_LOAD_FAILED 1B8 PIN_TOO_WEAK
1B9 PUBLIC_KEY_INVALID 200 FUNCTION_REJECTED 201 TOKEN_RESOURCE_EXCEEDED
202 OPERATION_CANCEL_FAILED
""".split()


def warn(msg):
    print("gen-registry: " + msg, file=sys.stderr)


# ---------------------------------------------------------------------------------------
# Reading the specification


def clean(text):
    """Collapse the Word-HTML artefacts of a cell or heading into plain ASCII-ish text."""
    text = text.replace("\xad", "").replace("\u200b", "")
    for dash in "\u2010\u2011\u2012\u2013\u2014":
        text = text.replace(dash, "-")
    text = text.replace("\u2019", "'").replace("\u2018", "'")
    return re.sub(r"\s+", " ", text.replace("\xa0", " ")).strip()


class SpecParser(html.parser.HTMLParser):
    """Turns the document into a flat list of events: ('h', heading), ('c', caption) and
    ('t', rows) where rows is a list of lists of cell texts."""

    HEADINGS = {"h1", "h2", "h3", "h4", "h5", "h6"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.events = []
        self.tables = []  # stack of {'rows', 'row', 'cell'}
        self.text = None  # heading or caption being collected
        self.text_kind = None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append({"rows": [], "row": None, "cell": None})
        elif self.tables:
            t = self.tables[-1]
            if tag == "tr":
                t["row"] = []
            elif tag in ("td", "th"):
                t["cell"] = []
            elif tag in ("p", "br", "li") and t["cell"] is not None:
                t["cell"].append(" ")
        elif tag in self.HEADINGS:
            self.text, self.text_kind = [], "h"
        elif tag == "p" and dict(attrs).get("class") == "MsoCaption":
            self.text, self.text_kind = [], "c"

    def handle_endtag(self, tag):
        if tag == "table" and self.tables:
            self.events.append(("t", self.tables.pop()["rows"]))
        elif self.tables:
            t = self.tables[-1]
            if tag == "tr" and t["row"] is not None:
                t["rows"].append(t["row"])
                t["row"] = None
            elif tag in ("td", "th") and t["cell"] is not None:
                if t["row"] is None:
                    t["row"] = []
                t["row"].append(clean("".join(t["cell"])))
                t["cell"] = None
        elif self.text is not None and (
            (self.text_kind == "h" and tag in self.HEADINGS) or (self.text_kind == "c" and tag == "p")
        ):
            self.events.append((self.text_kind, clean("".join(self.text))))
            self.text = None

    def handle_data(self, data):
        if self.tables:
            cell = self.tables[-1]["cell"]
            if cell is not None:
                cell.append(data)
        elif self.text is not None:
            self.text.append(data)


def normalize(name):
    """The KMIP Profiles "Normalizing Names" algorithm (see the module docstring)."""
    s = re.sub(r"[()]", " ", name)
    s = re.sub(r"[^A-Za-z0-9_ ]([A-Za-z][a-z])", r" \1", s)
    s = re.sub(r"[^A-Za-z0-9_ ]", "_", s)
    words = s.split(" ")
    words[0] = re.sub(r"^(\d+)(.*)$", r"\2\1", words[0])
    return "".join(w[:1].upper() + w[1:] for w in words)


SECTION = re.compile(r"^((?:[A-Z]\.|\d+)(?:\.\d+)*)\.?\s+(.*)$")
HEX = re.compile(r"^(?:0x)?([0-9A-Fa-f]+)$")


def split_heading(heading):
    m = SECTION.match(heading)
    return (m.group(1), m.group(2)) if m else ("", heading)


def parse_value(cell):
    m = HEX.match(re.sub(r"\s", "", cell))
    return int(m.group(1), 16) if m else None


def keep_row(name, value):
    if value is None or not name:
        return False
    return not (name.startswith("(") or name == "Extensions" or "Reserved" in name)


def html_tables(path):
    """The tables of an OASIS HTML document in order, as (heading, caption, rows): the
    section heading above the table, and the caption among the two events after it."""
    with open(path, encoding="cp1252", errors="replace") as f:
        parser = SpecParser()
        parser.feed(f.read())
        parser.close()
    events = parser.events
    heading, tables = "", []
    for i, (kind, payload) in enumerate(events):
        if kind == "h":
            heading = payload
        elif kind == "t":
            caption = next((p for k, p in events[i + 1 : i + 3] if k == "c"), "")
            tables.append((heading, caption, payload))
    return tables


def extract_tables(path):
    """The tables of an extract written by --extract: one JSON array a line, ["H", heading]
    (the section heading of the tables after it), ["T", caption] (a table begins) and
    ["R", cell, ...] (one row of it); '#' lines are the document's front matter."""
    heading, tables = "", []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.startswith("#") or not line.strip():
                continue
            record = json.loads(line)
            if record[0] == "H":
                heading = record[1]
            elif record[0] == "T":
                tables.append((heading, record[1], []))
            elif record[0] == "R" and tables:
                tables[-1][2].append(record[1:])
            else:
                sys.exit(f"{path}:{n}: not a heading, table or row: {line.strip()}")
    return tables


def spec_tables(spec_dir, html_name, extract_name):
    """(file read, tables) of one version: the in-repo extract, else the OASIS HTML."""
    extract = os.path.join(spec_dir, extract_name)
    if os.path.exists(extract):
        return extract, extract_tables(extract)
    html_path = os.path.join(spec_dir, html_name)
    if not os.path.exists(html_path):
        sys.exit(f"gen-registry: neither {extract_name} nor {html_name} in {spec_dir}")
    return html_path, html_tables(html_path)


def read_spec(name, tables):
    """Returns (tags, enums, masks, refs, used) of one version:
    tags: [(value, spec name)]; enums, masks: {title: [(value, spec name)]};
    refs: [(tag spec name, enum title)] taken from the encoding columns;
    used: the indices of the tables that gave any of these (what --extract keeps)."""
    tags, enums, masks = [], {}, {}
    section_titles = {}  # section number -> enum title
    pending_refs = []  # (tag name, section number or enum title)
    used = set()
    for i, (heading, caption, rows) in enumerate(tables):
        number, title = split_heading(heading)
        header = rows[1][:2] if len(rows) > 1 else None
        if header == ["Object", "Tag Value"] or (
            header == ["Name", "Value"] and title == "Tag Enumeration"
        ):
            used.add(i)
            for r in rows[2:]:
                if len(r) >= 2 and keep_row(r[0], parse_value(r[1])):
                    tags.append((parse_value(r[1]), r[0]))
            continue
        if header == ["Name", "Value"]:
            used.add(i)
            if title in MASK_HEADINGS:
                target = masks.setdefault(title, [])
            elif " Enumeration" in title or title.endswith("Enumeration"):
                enum_name = re.sub(r"\s*Enumeration\b.*$", "", title)
                section_titles[number] = enum_name
                target = enums.setdefault(enum_name, [])
            else:
                warn(f"{name}: Name/Value table under {title!r} skipped")
                continue
            for r in rows[2:]:
                if len(r) >= 2 and keep_row(r[0], parse_value(r[1])):
                    target.append((parse_value(r[1]), r[0]))
            continue
        # Pointers from an item to the enumeration that its values come from.
        m = re.match(r"(.+?) encoding descriptions?$", re.sub(r"^Table \d+:?\s*", "", caption))
        before = len(pending_refs)
        for r in rows:
            if len(r) < 2:
                continue
            if m and r[0] == "Enumeration" and r[1].endswith(" Enumeration"):
                pending_refs.append((m.group(1), r[1][: -len(" Enumeration")]))
            item = re.sub(r",\s*see .*$", "", r[0])
            for cell in r[1:]:
                see = re.match(r"Enumeration, see (\d+(?:\.\d+)+)", cell)
                if see:
                    pending_refs.append((item, ("§", see.group(1))))
                par = re.match(r"Enumeration \(([^)]+)\)", cell)
                if par and par.group(1) != "Tag":
                    pending_refs.append((item, par.group(1)))
        if len(pending_refs) > before:
            used.add(i)
    refs = []
    for item, target in pending_refs:
        if isinstance(target, tuple):
            target = section_titles.get(target[1])
            if target is None:
                continue
        refs.append((item, target))
    return tags, enums, masks, refs, used


# ---------------------------------------------------------------------------------------
# Merging the versions


def merge(table, versions):
    """versions: [[(value, name)]] oldest first -> sorted [(value, name)], newest name
    first among equal values, then older names (newest version first)."""
    by_value = {}
    for rank, entries in enumerate(versions):
        for value, name in entries:
            names = by_value.setdefault(value, {})
            xml = normalize(name)
            fixed = ERRATA.get((table, xml))
            if fixed is not None:
                names[fixed] = max(names.get(fixed, -1), rank)
                names.setdefault(xml, -1)  # the misprint last, so that it still parses
                continue
            names[xml] = max(names.get(xml, -1), rank)
    out = []
    for value in sorted(by_value):
        names = by_value[value]
        for xml in sorted(names, key=lambda n: (-names[n], n)):
            out.append((value, xml))
    seen = {}
    for value, xml in out:
        if xml in seen and seen[xml] != value:
            warn(f"name {xml} has two values: {seen[xml]:#x} and {value:#x}")
        seen.setdefault(xml, value)
    return out


def build(spec_dir):
    parsed = []
    for _, html_name, extract_name in SPEC_FILES:
        path, tables = spec_tables(spec_dir, html_name, extract_name)
        parsed.append(read_spec(os.path.basename(path), tables))
    tags = merge("Tag", [p[0] for p in parsed])
    enum_titles = sorted({t for p in parsed for t in p[1]})
    enums = {}
    for title in enum_titles:
        enums[normalize(title)] = merge(normalize(title), [p[1].get(title, []) for p in parsed])
    # The two tables that the specification defines by reference to PKCS#11.
    if not enums.get("PKCS_11Function"):
        enums["PKCS_11Function"] = [(i + 1, n) for i, n in enumerate(PKCS11_FUNCTIONS)]
    if not enums.get("PKCS_11ReturnCode"):
        pairs = zip(PKCS11_RETURN_CODES[::2], PKCS11_RETURN_CODES[1::2])
        enums["PKCS_11ReturnCode"] = sorted((int(v, 16), n) for v, n in pairs)
    mask_titles = sorted({t for p in parsed for t in p[2]})
    masks = {normalize(t): merge(normalize(t), [p[2].get(t, []) for p in parsed]) for t in mask_titles}

    tag_by_name = {}
    for value, xml in tags:
        tag_by_name.setdefault(xml, value)
    enum_tags = {name: set() for name in enums}
    owner = {}

    def attach(enum_name, tag_name, why):
        if enum_name not in enums:
            warn(f"{why}: no enumeration {enum_name}")
            return
        if tag_name not in tag_by_name:
            warn(f"{why}: no tag {tag_name}")
            return
        tag = tag_by_name[tag_name]
        if owner.setdefault(tag, enum_name) != enum_name:
            warn(f"{why}: tag {tag_name} already takes {owner[tag]}")
            return
        enum_tags[enum_name].add(tag)

    for name in enums:
        if name in tag_by_name:
            attach(name, name, "same name")
    for p in parsed:
        for item, target in p[3]:
            attach(normalize(target), normalize(item), f"{item} -> {target}")
    mask_by_tag = {}
    for name, bits in masks.items():
        if name not in tag_by_name:
            warn(f"mask {name} has no tag")
            continue
        mask_by_tag[tag_by_name[name]] = bits
    # The specification's own spelling of each tag, which KMIP 1.x uses as the Attribute
    # Name text ("Cryptographic Usage Mask"): attribute names are a 1.x notion, so the newest
    # 1.x spelling wins and 2.x fills in the tags that 1.x lacks.
    spec_names = {}
    for (version, _, _), p in zip(SPEC_FILES, parsed):
        for value, name in p[0]:
            if version.startswith("1."):
                spec_names[value] = name
            else:
                spec_names.setdefault(value, name)
    return tags, enums, enum_tags, mask_by_tag, spec_names


# ---------------------------------------------------------------------------------------
# Output


# The layout is the one rustfmt (default settings) gives, so that `cargo fmt --check` leaves
# the generated file alone: a tuple or an array stays on one line only while what is between
# its brackets is at most 60 columns wide (fn_call_width, array_width) and the line at most 100.
SHORT, MAX_WIDTH = 60, 100


def pair(indent, a, b):
    one = f"({a}, {b})"
    if len(one) - 2 <= SHORT and indent + len(one) + 1 <= MAX_WIDTH:
        return [" " * indent + one + ","]
    pad = " " * (indent + 4)
    return [" " * indent + "(", f"{pad}{a},", f"{pad}{b},", " " * indent + "),"]


def array(indent, prefix, entries):
    """`prefix&[...],` for entries [(a, b)] of short pairs."""
    inline = ", ".join(f"({a}, {b})" for a, b in entries)
    line = " " * indent + f"{prefix}&[{inline}],"
    if len(inline) <= SHORT and len(line) <= MAX_WIDTH:
        return [line]
    out = [" " * indent + f"{prefix}&["]
    for a, b in entries:
        out += pair(indent + 4, a, b)
    return out + [" " * indent + "],"]


def constant_name(name):
    """`CRTCoefficient` -> `CRT_COEFFICIENT`, `X509CertificateIdentifier` ->
    `X509_CERTIFICATE_IDENTIFIER`: a word starts at an upper-case letter after a lower-case
    letter or digit, or at the last capital of a run that a lower-case letter follows."""
    out = []
    for i, ch in enumerate(name):
        prev = name[i - 1] if i else ""
        nxt = name[i + 1] if i + 1 < len(name) else ""
        if ch.isupper() and i and (prev.islower() or prev.isdigit() or (prev.isupper() and nxt.islower())):
            out.append("_")
        out.append(ch.upper() if ch.isalnum() else "_")
    c = "".join(out)
    if not c.isidentifier() or c[0].isdigit():
        raise SystemExit(f"tag {name} makes no Rust constant name")
    return c


def rust(tags, enums, enum_tags, masks, spec_names):
    out = [
        "//! Generated by `tools/gen-registry.py` from the OASIS KMIP 1.0, 1.4 and 2.1 specifications.",
        "//! Do not edit by hand: change the generator and run it again.",
        "",
        "/// Every tag of KMIP 1.0–2.1 as (value, XML name), sorted by value.",
        "pub(crate) static TAGS: &[(u32, &str)] = &[",
    ]
    for v, n in tags:
        out += pair(4, f"0x{v:06X}", f'"{n}"')
    out += [
        "];",
        "",
        "// Every tag as a constant, so that code names a tag by a name the compiler checks",
        "// instead of a lookup that can fail at run time.",
        "impl crate::ttlv::Tag {",
    ]
    seen = {}
    for v, n in tags:
        c = constant_name(n)
        if c in seen:
            raise SystemExit(f"tags {seen[c]} and {n} both make the constant {c}")
        seen[c] = n
        out += [f"    /// `{n}`.", f"    pub const {c}: Self = Self::spec(0x{v:06X});"]
    out += [
        "}",
        "",
        "/// An enumeration of the specification, with the tags whose values it names.",
        "pub(crate) struct EnumTable {",
        "    /// The enumeration's XML name, e.g. `CryptographicAlgorithm`.",
        "    pub name: &'static str,",
        "    /// Tags whose Enumeration values are drawn from this table.",
        "    pub tags: &'static [u32],",
        "    /// (value, XML name), sorted by value.",
        "    pub values: &'static [(u32, &'static str)],",
        "}",
        "",
        "pub(crate) static ENUMS: &[EnumTable] = &[",
    ]
    for name in sorted(enums):
        tag_list = ", ".join(f"0x{t:06X}" for t in sorted(enum_tags[name]))
        out += ["    EnumTable {", f'        name: "{name}",', f"        tags: &[{tag_list}],"]
        out += array(8, "values: ", [(f"0x{v:08X}", f'"{n}"') for v, n in enums[name]])
        out += ["    },"]
    out += [
        "];",
        "",
        "/// Bit masks carried in Integer items: (tag, [(bit, XML name)]).",
        "pub(crate) static MASKS: &[(u32, &[(u32, &str)])] = &[",
    ]
    for tag in sorted(masks):
        out += ["    (", f"        0x{tag:06X},"]
        out += array(8, "", [(f"0x{v:08X}", f'"{n}"') for v, n in masks[tag]])
        out += ["    ),"]
    out += [
        "];",
        "",
        "/// The specification's spelling of each tag, (value, name) sorted by value: the",
        "/// Attribute Name text of KMIP 1.x (`Cryptographic Usage Mask`).",
        "pub(crate) static SPEC_NAMES: &[(u32, &str)] = &[",
    ]
    for v in sorted(spec_names):
        name = spec_names[v].replace("\\", "\\\\").replace('"', '\\"')
        out += pair(4, f"0x{v:06X}", f'"{name}"')
    out.append("];")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------
# Checking against the test cases


def check(registry, cases_dir):
    tags, enums, enum_tags, masks, _ = registry
    tag_by_name = {}
    canonical_tag = {}
    for v, n in tags:
        tag_by_name.setdefault(n, v)
        canonical_tag.setdefault(v, n)
    table_of = {t: name for name, ts in enum_tags.items() for t in ts}
    enum_values = {}  # table -> {name: value}
    enum_canonical = {}  # table -> {value: first name}
    for name, values in enums.items():
        enum_values[name] = {}
        enum_canonical[name] = {}
        for v, n in values:
            enum_values[name].setdefault(n, v)
            enum_canonical[name].setdefault(v, n)
    mask_names = {t: {n for _, n in bits} for t, bits in masks.items()}

    counts = {"files": 0, "elements": 0, "enumerations": 0, "masks": 0}
    problems, notes = {}, {}

    def record(into, kind, what, path):
        into.setdefault((kind, what), []).append(os.path.relpath(path, cases_dir))

    paths = []
    for root, _, names in os.walk(cases_dir):
        paths += [os.path.join(root, n) for n in names if n.endswith(".xml")]
    for path in sorted(paths):
        counts["files"] += 1
        tree = ET.parse(path)
        parent = {c: p for p in tree.iter() for c in p}
        for el in tree.iter():
            if el.tag in ("KMIP", "KmipTestCase"):
                continue
            counts["elements"] += 1
            if el.tag not in tag_by_name:
                record(problems, "element", el.tag, path)
                continue
            if canonical_tag[tag_by_name[el.tag]] != el.tag:
                record(notes, "non-canonical tag name", el.tag, path)
            kind, value = el.get("type"), el.get("value", "")
            is_enum = kind == "Enumeration" and not value.startswith("0x")
            is_mask = kind == "Integer" and re.search(r"[A-Za-z]", value) and not value.startswith("0x")
            if kind == "Enumeration":
                counts["enumerations"] += 1
            if not (is_enum or is_mask):
                continue
            target = el.tag
            if el.tag == "AttributeValue":
                name = parent[el].find("AttributeName") if el in parent else None
                if name is None:
                    record(problems, "AttributeValue without AttributeName", value, path)
                    continue
                target = name.get("value", "").replace(" ", "")
                if target not in tag_by_name:
                    record(problems, "AttributeName", name.get("value"), path)
                    continue
            tag = tag_by_name[target]
            if is_mask:
                counts["masks"] += 1
                if tag not in mask_names:
                    record(problems, "no mask table for", target, path)
                    continue
                for word in value.split():
                    if word not in mask_names[tag]:
                        record(problems, f"{target} bit", word, path)
            elif target == "AttributeReference":
                if value not in tag_by_name:
                    record(problems, "AttributeReference (a tag name)", value, path)
            elif tag not in table_of:
                record(problems, "no enumeration table for", target, path)
            else:
                table = table_of[tag]
                if value not in enum_values[table]:
                    record(problems, f"{table} value", value, path)
                elif enum_canonical[table][enum_values[table][value]] != value:
                    record(notes, f"non-canonical {table} name", value, path)
    print(
        "checked {files} files: {elements} elements, {enumerations} Enumeration items, "
        "{masks} Integer masks given by name".format(**counts)
    )
    for (kind, what), where in sorted(notes.items()):
        print(f"note: {kind} {what!r} ({len(where)}x, e.g. {where[0]})")
    for (kind, what), where in sorted(problems.items()):
        print(f"UNRESOLVED {kind}: {what!r} ({len(where)}x, e.g. {where[0]})")
    print(f"{len(problems)} unresolved names")
    return not problems


# ---------------------------------------------------------------------------------------
# Extracting what is read from the OASIS HTML


class FrontMatter(html.parser.HTMLParser):
    """The text blocks (paragraphs, headings, cells) before "Table of Contents": the title
    page, status and Notices of the document, whitespace collapsed and otherwise verbatim."""

    BLOCKS = {"p", "h1", "h2", "h3", "h4", "h5", "h6", "li", "td", "th"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.blocks, self.text, self.done = [], None, False

    def flush(self):
        if self.text is not None:
            text = re.sub(r"\s+", " ", "".join(self.text).replace("\xa0", " "))
            text = text.replace("\xad", "").replace("\u200b", "").strip()
            if text == "Table of Contents":
                self.done = True
            elif text:
                self.blocks.append(text)
        self.text = None

    def handle_starttag(self, tag, attrs):
        if self.done:
            return
        if tag in self.BLOCKS:
            self.flush()
            self.text = []
        elif tag == "br" and self.text is not None:
            self.text.append(" ")

    def handle_endtag(self, tag):
        if not self.done and tag in self.BLOCKS:
            self.flush()

    def handle_data(self, data):
        if not self.done and self.text is not None:
            self.text.append(data)


def extract(html_dir, out_dir):
    """Writes, for each version, the front matter and the tables that read_spec uses."""
    os.makedirs(out_dir, exist_ok=True)
    for _, html_name, extract_name in SPEC_FILES:
        html_path = os.path.join(html_dir, html_name)
        tables = html_tables(html_path)
        used = read_spec(html_name, tables)[4]
        front = FrontMatter()
        with open(html_path, encoding="cp1252", errors="replace") as f:
            front.feed(f.read())
        front.close()
        lines = [
            f"# Extract of the OASIS document {html_name}, written by tools/gen-registry.py",
            "# --extract: first the document's front matter and Notices (verbatim, whitespace",
            f"# collapsed), then {len(used)} of its {len(tables)} tables, those the generator reads (tag,",
            "# enumeration and mask tables, and tables that point an item at an enumeration),",
            "# each under its section heading and with its caption, cells as the generator's",
            "# HTML parser reads them. One JSON array a line: H heading, T caption, R row.",
            "#",
        ]
        for block in front.blocks:
            wrapped = textwrap.wrap(block, 96, break_long_words=False, break_on_hyphens=False)
            lines += ["# " + w for w in wrapped] + ["#"]
        heading = None
        for i in sorted(used):
            h, caption, rows = tables[i]
            if h != heading:
                lines.append(json.dumps(["H", h], ensure_ascii=False))
                heading = h
            lines.append(json.dumps(["T", caption], ensure_ascii=False))
            lines += [json.dumps(["R"] + r, ensure_ascii=False) for r in rows]
        with open(os.path.join(out_dir, extract_name), "w", encoding="utf-8", newline="\n") as f:
            f.write("\n".join(lines) + "\n")
        print(f"{extract_name}: {len(used)} of {len(tables)} tables")


def main(argv):
    ap = argparse.ArgumentParser(
        description="Generates the KMIP tag/enumeration registry (to stdout) or checks it."
    )
    ap.add_argument(
        "spec", nargs="?", default=SPEC_DIR, metavar="SPEC_DIR",
        help="folder with the extracts or the OASIS HTML (default: testdata/kmip/spec)",
    )
    ap.add_argument("--spec", dest="spec_opt", metavar="SPEC_DIR", help="same as SPEC_DIR")
    ap.add_argument(
        "--check", nargs="?", const=CASES_DIR, metavar="TESTCASES_DIR",
        help="verify every name the OASIS test cases use (default: testdata/kmip/testcases)",
    )
    ap.add_argument(
        "--extract", nargs=2, metavar=("HTML_DIR", "OUT_DIR"),
        help="write the extracts of the OASIS HTML in HTML_DIR to OUT_DIR",
    )
    args = ap.parse_args(argv[1:])
    if args.extract:
        extract(*args.extract)
        return
    registry = build(args.spec_opt or args.spec)
    if args.check is not None:
        sys.exit(0 if check(registry, args.check) else 1)
    sys.stdout.buffer.write(rust(*registry).encode("utf-8"))


if __name__ == "__main__":
    main(sys.argv)
