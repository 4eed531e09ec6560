//! The audit log's recent entries, newest first, filtered by volume and by text.

use maud::{html, Markup};
use serde_json::Value;

use super::layout::{page, Section, Who};

/// The filter the operator chose.
pub struct Filter {
    /// A volume name, or empty for all.
    pub volume: String,
    /// Text that the operation, result, source or key must contain, or empty.
    pub text: String,
}

/// The page: `entries` already filtered, newest first; `volumes` for the choice.
pub fn render(
    who: Who<'_>,
    entries: &[Value],
    volumes: &[String],
    filter: &Filter,
    note: Option<&str>,
) -> Markup {
    let field = |e: &Value, k: &str| match &e[k] {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        v => v.to_string(),
    };
    page(
        "Audit log",
        Section::Audit,
        Some(Who {
            user: who.user,
            csrf: who.csrf,
        }),
        html! {
            h1 { "Audit log" }
            form.filter method="get" action="/audit" {
                label for="volume" { "Volume" }
                select #volume name="volume" {
                    option value="" selected[filter.volume.is_empty()] { "all" }
                    @for v in volumes { option value=(v) selected[&filter.volume == v] { (v) } }
                }
                label for="q" { "Containing" }
                input #q type="search" name="q" value=(filter.text);
                button type="submit" { "Filter" }
            }
            @if let Some(n) = note { p.hint { (n) } }
            table.audit {
                thead { tr { th { "Time" } th { "Volume" } th { "Operation" } th { "Result" } th { "Key" } th { "Server" } th { "Source" } } }
                tbody {
                    @for e in entries {
                        tr {
                            td { (field(e, "time")) }
                            td { (field(e, "volume")) }
                            td { (field(e, "operation")) }
                            td { (field(e, "result")) }
                            td { (field(e, "key_uid")) }
                            td { (field(e, "server")) }
                            td { (field(e, "source")) }
                        }
                    }
                }
            }
            @if entries.is_empty() { p { "No entry matches." } }
        },
    )
}
