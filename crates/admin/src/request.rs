//! A request as the page's handlers see it (read whole, its form parsed), and the answer
//! they give. The transport (TLS, bounds, deadlines) is [`crate::server`]'s.

use std::net::IpAddr;

use hyper::StatusCode;
use zeroize::Zeroizing;

use crate::settings::Upload;

/// A parsed form: text fields (zeroized when dropped: some are passwords) and files.
#[derive(Default)]
pub struct Form {
    fields: Vec<(String, Zeroizing<String>)>,
    files: Vec<(String, Upload)>,
}

impl Form {
    /// An `application/x-www-form-urlencoded` body.
    pub fn urlencoded(body: &[u8]) -> Self {
        Self {
            fields: form_urlencoded::parse(body)
                .map(|(k, v)| (k.into_owned(), Zeroizing::new(v.into_owned())))
                .collect(),
            files: Vec::new(),
        }
    }

    /// Adds a text field.
    pub fn push_field(&mut self, name: String, value: Zeroizing<String>) {
        self.fields.push((name, value));
    }

    /// Adds a file (an empty file input adds nothing).
    pub fn push_file(&mut self, name: String, upload: Upload) {
        if !upload.bytes.is_empty() || !upload.filename.is_empty() {
            self.files.push((name, upload));
        }
    }

    /// The first field named `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The first non-empty file named `name`.
    pub fn file(&self, name: &str) -> Option<&Upload> {
        self.files
            .iter()
            .find(|(k, u)| k == name && !u.bytes.is_empty())
            .map(|(_, u)| u)
    }

    /// A file input named `name` that was chosen but is empty.
    pub fn empty_file(&self, name: &str) -> Option<&Upload> {
        self.files
            .iter()
            .find(|(k, u)| k == name && u.bytes.is_empty() && !u.filename.is_empty())
            .map(|(_, u)| u)
    }
}

/// A request, read whole.
pub struct Request {
    /// GET, POST …
    pub method: hyper::Method,
    /// The path.
    pub path: String,
    /// The query string.
    pub query: String,
    /// `Cookie` pairs.
    pub cookies: Vec<(String, String)>,
    /// The `Origin` header, when the browser sent one.
    pub origin: Option<String>,
    /// The `Host` header.
    pub host: Option<String>,
    /// The client's address.
    pub peer: IpAddr,
    /// The form, for a POST.
    pub form: Form,
}

impl Request {
    /// The cookie named `name`.
    pub fn cookie(&self, name: &str) -> Option<&str> {
        self.cookies
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A query parameter.
    pub fn param(&self, name: &str) -> Option<String> {
        form_urlencoded::parse(self.query.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }
}

/// Parses a `Cookie` header's pairs.
pub fn cookies(header: &str) -> Vec<(String, String)> {
    header
        .split(';')
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            Some((k.trim().to_owned(), v.trim().to_owned()))
        })
        .collect()
}

/// An answer.
pub struct Answer {
    /// Its status.
    pub status: StatusCode,
    /// Its media type.
    pub content_type: &'static str,
    /// Its body.
    pub body: Vec<u8>,
    /// `Set-Cookie` values.
    pub set_cookies: Vec<String>,
    /// Where a redirect goes.
    pub location: Option<String>,
    /// May be cached (the embedded assets); everything else is `no-store`.
    pub cacheable: bool,
}

impl Answer {
    /// An HTML page.
    pub fn html(status: StatusCode, markup: maud::Markup) -> Self {
        Self {
            status,
            content_type: "text/html; charset=utf-8",
            body: markup.into_string().into_bytes(),
            set_cookies: Vec::new(),
            location: None,
            cacheable: false,
        }
    }

    /// A JSON document.
    pub fn json(status: StatusCode, value: &impl serde::Serialize) -> Self {
        Self {
            status,
            content_type: "application/json",
            body: serde_json::to_vec(value).unwrap_or_default(),
            set_cookies: Vec::new(),
            location: None,
            cacheable: false,
        }
    }

    /// 303 See Other to `to` (after a POST: a reload does not post again).
    pub fn redirect(to: &str) -> Self {
        Self {
            status: StatusCode::SEE_OTHER,
            content_type: "text/plain; charset=utf-8",
            body: Vec::new(),
            set_cookies: Vec::new(),
            location: Some(to.to_owned()),
            cacheable: false,
        }
    }

    /// The same, setting a cookie.
    pub fn with_cookie(mut self, c: String) -> Self {
        self.set_cookies.push(c);
        self
    }
}
