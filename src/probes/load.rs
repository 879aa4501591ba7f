//! Loading and validating a probe-set directory.
//!
//! Files are read as TOML into tables whose keys and values keep their byte spans, and
//! each field is checked by hand rather than by a derived `Deserialize`: a derived one
//! stops at the first problem, while a person fixing a set wants every problem at once,
//! each with its `file:line`.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::IgnoredAny;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use toml::{Spanned, Value};

use super::{Probe, ProbeForm, ProbeKind, ProbeSet};

/// The file that names the set; every other `*.toml` file holds probes.
const SET_FILE: &str = "set.toml";

/// One problem found in a probe set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: PathBuf,
    /// 1-based; 0 when the problem concerns the whole file (it is then left out of the
    /// display).
    pub line: usize,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file.display(), self.message)
        } else {
            write!(f, "{}:{}: {}", self.file.display(), self.line, self.message)
        }
    }
}

/// Everything wrong with a probe set (or a refusal lexicon), one diagnostic per problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", render(.diagnostics))]
pub struct ProbeError {
    pub diagnostics: Vec<Diagnostic>,
}

fn render(diagnostics: &[Diagnostic]) -> String {
    let lines: Vec<String> = diagnostics.iter().map(ToString::to_string).collect();
    lines.join("\n")
}

/// Loads `set.toml` and every other `*.toml` file in `dir` (not recursively), validates
/// them and resolves each probe's parameters.
pub fn load_dir(dir: &Path) -> Result<ProbeSet, ProbeError> {
    let mut diags = Vec::new();
    let names = match list_toml_files(dir, &mut diags) {
        Some(names) => names,
        None => return Err(ProbeError { diagnostics: diags }),
    };

    if !names.iter().any(|name| name == SET_FILE) {
        diags.push(Diagnostic {
            file: dir.join(SET_FILE),
            line: 0,
            message: "missing: every probe set needs a set.toml with its name and version"
                .to_string(),
        });
    }

    let mut sources: Vec<(String, Vec<u8>)> = Vec::new();
    for name in names {
        let path = dir.join(&name);
        match std::fs::read(&path) {
            Ok(bytes) => sources.push((name, bytes)),
            Err(err) => diags.push(Diagnostic {
                file: path,
                line: 0,
                message: format!("cannot read the file: {err}"),
            }),
        }
    }
    parse_sources(dir, &sources, diags)
}

/// Parses and validates a probe set from its files' contents (`(file name, bytes)`, one
/// named `set.toml`), as if read from `dir`; diagnostics name files under `dir`. The
/// parsing half of [`load_dir`], and what the fuzz target feeds.
pub fn load_sources(dir: &Path, sources: &[(String, Vec<u8>)]) -> Result<ProbeSet, ProbeError> {
    let mut diags = Vec::new();
    if !sources.iter().any(|(name, _)| name == SET_FILE) {
        diags.push(Diagnostic {
            file: dir.join(SET_FILE),
            line: 0,
            message: "missing: every probe set needs a set.toml with its name and version"
                .to_string(),
        });
    }
    parse_sources(dir, sources, diags)
}

fn parse_sources(
    dir: &Path,
    sources: &[(String, Vec<u8>)],
    mut diags: Vec<Diagnostic>,
) -> Result<ProbeSet, ProbeError> {
    let hash = hash_files(sources);

    let mut header = None;
    let mut probes: Vec<Probe> = Vec::new();
    let mut ids: Vec<IdSite> = Vec::new();
    for (name, bytes) in sources {
        let path = dir.join(name);
        let text = match std::str::from_utf8(bytes) {
            Ok(text) => text,
            Err(err) => {
                let line = 1 + bytes[..err.valid_up_to()]
                    .iter()
                    .filter(|&&b| b == b'\n')
                    .count();
                diags.push(Diagnostic {
                    file: path,
                    line,
                    message: "the file is not valid UTF-8".to_string(),
                });
                continue;
            }
        };
        let mut ctx = FileCtx::new(&path, text, &mut diags);
        if name == SET_FILE {
            header = parse_set_file(&mut ctx);
        } else {
            let parsed = parse_probe_file(&mut ctx);
            probes.extend(parsed.probes);
            ids.extend(parsed.ids.into_iter().map(|(id, line)| IdSite {
                id,
                file: name.clone(),
                line,
            }));
        }
    }

    check_duplicate_ids(dir, &ids, &mut diags);
    if diags.is_empty() && probes.is_empty() {
        diags.push(Diagnostic {
            file: dir.to_path_buf(),
            line: 0,
            message: "the set has no probes".to_string(),
        });
    }

    match header {
        Some((name, version)) if diags.is_empty() => Ok(ProbeSet {
            name,
            version,
            hash,
            probes,
        }),
        _ => {
            // Files are read in name order; sorting by line keeps each file's problems in
            // reading order, which is what a person fixing them wants.
            diags.sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
            Err(ProbeError { diagnostics: diags })
        }
    }
}

/// File names (not paths) of the `*.toml` files directly in `dir`, sorted.
fn list_toml_files(dir: &Path, diags: &mut Vec<Diagnostic>) -> Option<Vec<String>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) => {
            diags.push(Diagnostic {
                file: dir.to_path_buf(),
                line: 0,
                message: format!("cannot read the directory: {err}"),
            });
            return None;
        }
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = match entry {
            Ok(entry) => entry,
            Err(err) => {
                diags.push(Diagnostic {
                    file: dir.to_path_buf(),
                    line: 0,
                    message: format!("cannot read the directory: {err}"),
                });
                return None;
            }
        };
        let path = entry.path();
        if !path.is_file() || path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        match entry.file_name().into_string() {
            Ok(name) => names.push(name),
            Err(_) => diags.push(Diagnostic {
                file: path,
                line: 0,
                message: "the file name is not valid UTF-8".to_string(),
            }),
        }
    }
    names.sort();
    Some(names)
}

/// Hex SHA-256 over (name, length, bytes) of each file in name order. The length prefix
/// keeps the serialisation unambiguous, so no two different sets share it.
fn hash_files(sources: &[(String, Vec<u8>)]) -> String {
    let mut sorted: Vec<&(String, Vec<u8>)> = sources.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let mut hasher = Sha256::new();
    for (name, bytes) in sorted {
        hasher.update(name.as_bytes());
        hasher.update([0u8]);
        hasher.update((bytes.len() as u64).to_le_bytes());
        hasher.update(bytes);
    }
    hex::encode(hasher.finalize())
}

/// Where a probe's id is written.
struct IdSite {
    id: String,
    /// File name within the set's directory.
    file: String,
    line: usize,
}

/// Checks ids of every probe, valid or not, so a duplicate is reported together with the
/// probe's other problems rather than after they are fixed.
fn check_duplicate_ids(dir: &Path, sites: &[IdSite], diags: &mut Vec<Diagnostic>) {
    let mut first: HashMap<&str, &IdSite> = HashMap::new();
    for site in sites {
        match first.get(site.id.as_str()) {
            Some(earlier) => diags.push(Diagnostic {
                file: dir.join(&site.file),
                line: site.line,
                message: format!(
                    "duplicate id `{}` (first defined at {}:{})",
                    site.id, earlier.file, earlier.line
                ),
            }),
            None => {
                first.insert(site.id.as_str(), site);
            }
        }
    }
}

/// Where diagnostics for one file go, with the byte-offset to line mapping.
struct FileCtx<'a> {
    path: &'a Path,
    text: &'a str,
    line_starts: Vec<usize>,
    diags: &'a mut Vec<Diagnostic>,
}

impl<'a> FileCtx<'a> {
    fn new(path: &'a Path, text: &'a str, diags: &'a mut Vec<Diagnostic>) -> FileCtx<'a> {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        FileCtx {
            path,
            text,
            line_starts,
            diags,
        }
    }

    fn line(&self, offset: usize) -> usize {
        self.line_starts.partition_point(|&start| start <= offset)
    }

    fn error_at(&mut self, offset: usize, message: impl Into<String>) {
        let line = self.line(offset);
        self.diags.push(Diagnostic {
            file: self.path.to_path_buf(),
            line,
            message: message.into(),
        });
    }

    fn error_file(&mut self, message: impl Into<String>) {
        self.diags.push(Diagnostic {
            file: self.path.to_path_buf(),
            line: 0,
            message: message.into(),
        });
    }

    fn toml_error(&mut self, what: &str, err: &toml::de::Error) {
        // toml's messages span several lines; one line per diagnostic reads better.
        let message = err.message().trim().replace('\n', "; ");
        match err.span() {
            Some(span) => self.error_at(span.start, format!("{what}: {message}")),
            None => self.error_file(format!("{what}: {message}")),
        }
    }

    /// Parses the file, reporting a syntax error; `None` when it is not valid TOML.
    fn check_syntax(&mut self) -> Option<BTreeMap<Spanned<String>, IgnoredAny>> {
        match toml::from_str(self.text) {
            Ok(keys) => Some(keys),
            Err(err) => {
                self.toml_error("TOML syntax error", &err);
                None
            }
        }
    }
}

type RawTable = BTreeMap<Spanned<String>, Spanned<Value>>;

/// A TOML table whose fields are taken one by one; whatever is left is unknown.
struct Fields {
    /// Offset of the table itself (its `[[probe]]` header), for missing fields.
    start: usize,
    entries: BTreeMap<String, (usize, Spanned<Value>)>,
}

impl Fields {
    fn new(table: Spanned<RawTable>) -> Fields {
        let start = table.span().start;
        let entries = table
            .into_inner()
            .into_iter()
            .map(|(key, value)| {
                let key_start = key.span().start;
                (key.into_inner(), (key_start, value))
            })
            .collect();
        Fields { start, entries }
    }

    fn take(&mut self, key: &str) -> Option<(usize, Value)> {
        self.entries.remove(key).map(|(_, value)| {
            let offset = value.span().start;
            (offset, value.into_inner())
        })
    }

    fn string(&mut self, ctx: &mut FileCtx, key: &str) -> Option<(usize, String)> {
        match self.take(key)? {
            (offset, Value::String(s)) => Some((offset, s)),
            (offset, _) => {
                ctx.error_at(offset, format!("field `{key}` must be a string"));
                None
            }
        }
    }

    /// A string that must be present; reports it missing at the table's header.
    fn required_string(&mut self, ctx: &mut FileCtx, key: &str) -> Option<(usize, String)> {
        if !self.entries.contains_key(key) {
            ctx.error_at(self.start, format!("missing field `{key}`"));
            return None;
        }
        self.string(ctx, key)
    }

    fn bool(&mut self, ctx: &mut FileCtx, key: &str) -> Option<(usize, bool)> {
        match self.take(key)? {
            (offset, Value::Boolean(b)) => Some((offset, b)),
            (offset, _) => {
                ctx.error_at(offset, format!("field `{key}` must be true or false"));
                None
            }
        }
    }

    fn uint(&mut self, ctx: &mut FileCtx, key: &str) -> Option<(usize, u64)> {
        match self.take(key)? {
            (offset, Value::Integer(i)) if i >= 0 => Some((offset, i.unsigned_abs())),
            (offset, _) => {
                ctx.error_at(
                    offset,
                    format!("field `{key}` must be a non-negative integer"),
                );
                None
            }
        }
    }

    /// A count that must fit `usize` and be at least `min`.
    fn count(&mut self, ctx: &mut FileCtx, key: &str, min: u64) -> Option<usize> {
        let (offset, n) = self.uint(ctx, key)?;
        if n < min {
            ctx.error_at(offset, format!("field `{key}` must be at least {min}"));
            return None;
        }
        match usize::try_from(n) {
            Ok(n) => Some(n),
            Err(_) => {
                ctx.error_at(offset, format!("field `{key}` is too large"));
                None
            }
        }
    }

    /// A number (TOML writes `1` as an integer, so integers are accepted too).
    fn number(&mut self, ctx: &mut FileCtx, key: &str) -> Option<(usize, f64)> {
        match self.take(key)? {
            (offset, Value::Float(x)) => Some((offset, x)),
            (offset, Value::Integer(i)) => Some((offset, i as f64)),
            (offset, _) => {
                ctx.error_at(offset, format!("field `{key}` must be a number"));
                None
            }
        }
    }

    fn strings(&mut self, ctx: &mut FileCtx, key: &str) -> Option<Vec<String>> {
        let (offset, value) = self.take(key)?;
        let strings = match value {
            Value::Array(items) => items
                .into_iter()
                .map(|item| match item {
                    Value::String(s) => Some(s),
                    _ => None,
                })
                .collect::<Option<Vec<String>>>(),
            _ => None,
        };
        if strings.is_none() {
            ctx.error_at(offset, format!("field `{key}` must be an array of strings"));
        }
        strings
    }

    fn report_unknown(self, ctx: &mut FileCtx) {
        for (key, (key_start, _)) in self.entries {
            ctx.error_at(key_start, format!("unknown field `{key}`"));
        }
    }
}

/// Generation parameters given by a probe or by its file's `[defaults]`.
#[derive(Debug, Clone, Default)]
struct Params {
    max_tokens: Option<usize>,
    temperature: Option<f32>,
    top_p: Option<f32>,
    samples: Option<usize>,
    top_logprobs: Option<usize>,
    seed: Option<u64>,
    stop: Option<Vec<String>>,
}

impl Params {
    fn parse(fields: &mut Fields, ctx: &mut FileCtx) -> Params {
        let temperature = fields.number(ctx, "temperature").and_then(|(offset, t)| {
            if (0.0..=2.0).contains(&t) {
                Some(t as f32)
            } else {
                ctx.error_at(offset, format!("temperature {t} is outside [0, 2]"));
                None
            }
        });
        let top_p = fields.number(ctx, "top_p").and_then(|(offset, p)| {
            if p > 0.0 && p <= 1.0 {
                Some(p as f32)
            } else {
                ctx.error_at(offset, format!("top_p {p} is outside (0, 1]"));
                None
            }
        });
        Params {
            max_tokens: fields.count(ctx, "max_tokens", 1),
            temperature,
            top_p,
            samples: fields.count(ctx, "samples", 1),
            top_logprobs: fields.count(ctx, "top_logprobs", 0),
            seed: fields.uint(ctx, "seed").map(|(_, seed)| seed),
            stop: fields.strings(ctx, "stop"),
        }
    }

    /// These parameters, with gaps filled from `fallback`.
    fn or(self, fallback: &Params) -> Params {
        Params {
            max_tokens: self.max_tokens.or(fallback.max_tokens),
            temperature: self.temperature.or(fallback.temperature),
            top_p: self.top_p.or(fallback.top_p),
            samples: self.samples.or(fallback.samples),
            top_logprobs: self.top_logprobs.or(fallback.top_logprobs),
            seed: self.seed.or(fallback.seed),
            stop: self.stop.or_else(|| fallback.stop.clone()),
        }
    }
}

/// `set.toml`: the set's name and version. Returns them when both are valid.
fn parse_set_file(ctx: &mut FileCtx) -> Option<(String, String)> {
    ctx.check_syntax()?;
    let table: RawTable = match toml::from_str(ctx.text) {
        Ok(table) => table,
        Err(err) => {
            ctx.toml_error("invalid structure", &err);
            return None;
        }
    };
    let mut fields = Fields::new(Spanned::new(0..0, table));
    let name = set_field(&mut fields, ctx, "name");
    let version = set_field(&mut fields, ctx, "version");
    fields.report_unknown(ctx);
    Some((name?, version?))
}

/// A required, non-blank string of `set.toml`.
fn set_field(fields: &mut Fields, ctx: &mut FileCtx, key: &str) -> Option<String> {
    if !fields.entries.contains_key(key) {
        ctx.error_file(format!("missing field `{key}`"));
        return None;
    }
    let (offset, value) = fields.string(ctx, key)?;
    if value.trim().is_empty() {
        ctx.error_at(offset, format!("field `{key}` is empty"));
        return None;
    }
    Some(value)
}

#[derive(Deserialize)]
struct ProbeFile {
    #[serde(default)]
    probe: Vec<Spanned<RawTable>>,
    defaults: Option<Spanned<RawTable>>,
}

/// What a probe file yields.
#[derive(Default)]
struct ParsedFile {
    /// The valid probes.
    probes: Vec<Probe>,
    /// The id and its line of every probe that has one, valid or not.
    ids: Vec<(String, usize)>,
}

/// A file of `[[probe]]` tables.
fn parse_probe_file(ctx: &mut FileCtx) -> ParsedFile {
    let mut parsed = ParsedFile::default();
    let Some(keys) = ctx.check_syntax() else {
        return parsed;
    };
    for key in keys.keys() {
        if key.get_ref() != "probe" && key.get_ref() != "defaults" {
            ctx.error_at(
                key.span().start,
                format!(
                    "unknown top-level key `{}` (a probe file holds [[probe]] tables and \
                     an optional [defaults] table)",
                    key.get_ref()
                ),
            );
        }
    }
    let file: ProbeFile = match toml::from_str(ctx.text) {
        Ok(file) => file,
        Err(err) => {
            ctx.toml_error("invalid structure", &err);
            return parsed;
        }
    };
    if file.probe.is_empty() {
        ctx.error_file("no [[probe]] tables in this file");
    }

    let defaults = match file.defaults {
        Some(table) => {
            let mut fields = Fields::new(table);
            let params = Params::parse(&mut fields, ctx);
            fields.report_unknown(ctx);
            params
        }
        None => Params::default(),
    };
    for table in file.probe {
        if let Some(probe) = parse_probe(table, &defaults, ctx, &mut parsed.ids) {
            parsed.probes.push(probe);
        }
    }
    parsed
}

/// One `[[probe]]` table, or `None` after reporting why it is invalid. Its id, when it has
/// a non-empty one, goes to `ids` either way.
fn parse_probe(
    table: Spanned<RawTable>,
    defaults: &Params,
    ctx: &mut FileCtx,
    ids: &mut Vec<(String, usize)>,
) -> Option<Probe> {
    let errors_before = ctx.diags.len();
    let mut fields = Fields::new(table);

    let id = fields.required_string(ctx, "id");
    if let Some((offset, id)) = &id {
        if id.is_empty() {
            ctx.error_at(*offset, "field `id` is empty");
        } else {
            let well_formed = id
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_-.".contains(c));
            if !well_formed {
                ctx.error_at(
                    *offset,
                    format!("id `{id}` may only contain a-z, 0-9, `_`, `-` and `.`"),
                );
            }
            ids.push((id.clone(), ctx.line(*offset)));
        }
    }

    let kind =
        fields
            .required_string(ctx, "kind")
            .and_then(|(offset, name)| match ProbeKind::parse(&name) {
                Some(kind) => Some(kind),
                None => {
                    let expected: Vec<&str> = ProbeKind::ALL.iter().map(|k| k.as_str()).collect();
                    ctx.error_at(
                        offset,
                        format!(
                            "unknown kind `{name}` (expected one of: {})",
                            expected.join(", ")
                        ),
                    );
                    None
                }
            });

    let form_field = fields.string(ctx, "form");
    let form = match &form_field {
        Some((offset, name)) => match ProbeForm::parse(name) {
            Some(form) => Some(form),
            None => {
                ctx.error_at(
                    *offset,
                    format!("unknown form `{name}` (expected chat or raw)"),
                );
                None
            }
        },
        None => kind.map(|kind| kind.defaults().form),
    };

    let text = fields.required_string(ctx, "text");
    if let Some((offset, text)) = &text {
        // Whitespace-only text is a legitimate tokenizer probe, so only "" is empty.
        if text.is_empty() {
            ctx.error_at(*offset, "field `text` is empty");
        }
    }

    let system = fields.string(ctx, "system");
    if let (Some((offset, _)), Some(ProbeForm::Raw)) = (&system, form) {
        ctx.error_at(*offset, "field `system` is only allowed on chat probes");
    }

    // A field of the wrong type is reported as such, not also as missing.
    let has_category = fields.entries.contains_key("category");
    let has_expect_refusal = fields.entries.contains_key("expect_refusal");
    let category = fields.string(ctx, "category");
    let expect_refusal = fields.bool(ctx, "expect_refusal");
    if kind == Some(ProbeKind::Refusal) {
        if !has_category {
            ctx.error_at(
                fields.start,
                "missing field `category` (required on refusal probes)",
            );
        }
        if let Some((offset, category)) = &category {
            if category.trim().is_empty() {
                ctx.error_at(*offset, "field `category` is empty");
            }
        }
        if !has_expect_refusal {
            ctx.error_at(
                fields.start,
                "missing field `expect_refusal` (required on refusal probes)",
            );
        }
    } else if kind.is_some() {
        for (key, offset) in [
            ("category", category.as_ref().map(|c| c.0)),
            ("expect_refusal", expect_refusal.map(|e| e.0)),
        ] {
            if let Some(offset) = offset {
                ctx.error_at(offset, format!("field `{key}` is only for refusal probes"));
            }
        }
    }

    let lang = fields.string(ctx, "lang");
    if let Some((offset, lang)) = &lang {
        let well_formed = !lang.is_empty()
            && lang.len() <= 12
            && lang
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !well_formed {
            ctx.error_at(
                *offset,
                format!("lang `{lang}` is not a lowercase language code such as `en` or `pt-br`"),
            );
        }
    }
    let tags = fields.strings(ctx, "tags").unwrap_or_default();

    let params = Params::parse(&mut fields, ctx).or(defaults);
    let probe_start = fields.start;
    fields.report_unknown(ctx);

    let kind = kind?;
    let builtin = kind.defaults();
    let temperature = params.temperature.unwrap_or(builtin.temperature);
    let samples = params.samples.unwrap_or(builtin.samples);
    if kind == ProbeKind::Sampling {
        // Repeated asks only tell something when the answers can differ.
        if temperature == 0.0 {
            ctx.error_at(
                probe_start,
                "sampling probe with temperature 0 gives identical samples",
            );
        }
        if samples < 2 {
            ctx.error_at(probe_start, "sampling probe needs `samples` of at least 2");
        }
    }

    if ctx.diags.len() > errors_before {
        return None;
    }
    Some(Probe {
        id: id?.1,
        kind,
        form: form?,
        text: text?.1,
        system: system.map(|s| s.1),
        max_tokens: params.max_tokens.unwrap_or(builtin.max_tokens),
        temperature,
        top_p: params.top_p.unwrap_or(builtin.top_p),
        samples,
        top_logprobs: params.top_logprobs.unwrap_or(builtin.top_logprobs),
        seed: params.seed,
        stop: params.stop.unwrap_or_default(),
        category: category.map(|c| c.1),
        expect_refusal: expect_refusal.map(|e| e.1),
        lang: lang.map(|l| l.1),
        tags,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SET: &str = "name = \"test\"\nversion = \"0.1.0\"\n";

    /// A temp dir holding `files` (name, contents).
    fn dir_with(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("temp dir");
        for (name, contents) in files {
            std::fs::write(dir.path().join(name), contents).expect("write test file");
        }
        dir
    }

    /// The diagnostics of loading `files`, with the temp dir's prefix removed.
    fn errors(files: &[(&str, &str)]) -> Vec<String> {
        let dir = dir_with(files);
        let err = match load_dir(dir.path()) {
            Ok(set) => panic!("expected errors, loaded {} probes", set.probes.len()),
            Err(err) => err,
        };
        let prefix = format!("{}{}", dir.path().display(), std::path::MAIN_SEPARATOR);
        err.diagnostics
            .iter()
            .map(|d| d.to_string().replacen(&prefix, "", 1))
            .collect()
    }

    fn probes_file(body: &str) -> Vec<String> {
        errors(&[("set.toml", SET), ("p.toml", body)])
    }

    #[test]
    fn loads_and_resolves_defaults() {
        let dir = dir_with(&[
            ("set.toml", SET),
            (
                "a.toml",
                "[defaults]\nmax_tokens = 7\n\n\
                 [[probe]]\nid = \"l1\"\nkind = \"logit\"\nform = \"raw\"\ntext = \"The sky is\"\n\n\
                 [[probe]]\nid = \"l2\"\nkind = \"logit\"\ntext = \"Hi\"\nmax_tokens = 2\ntemperature = 1\n",
            ),
            (
                "b.toml",
                "[[probe]]\nid = \"r1\"\nkind = \"refusal\"\ntext = \"x\"\ncategory = \"fraud\"\n\
                 expect_refusal = true\nsystem = \"Be safe.\"\nlang = \"en\"\ntags = [\"t\"]\n",
            ),
            ("notes.txt", "not a probe file"),
        ]);
        let set = match load_dir(dir.path()) {
            Ok(set) => set,
            Err(err) => panic!("unexpected errors:\n{err}"),
        };
        assert_eq!(set.name, "test");
        assert_eq!(set.version, "0.1.0");
        assert_eq!(set.hash.len(), 64);
        let ids: Vec<&str> = set.probes.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(ids, ["l1", "l2", "r1"]);
        let l1 = &set.probes[0];
        assert_eq!(
            (l1.form, l1.max_tokens, l1.top_logprobs),
            (ProbeForm::Raw, 7, 20)
        );
        let l2 = &set.probes[1];
        assert_eq!(
            (l2.form, l2.max_tokens, l2.temperature),
            (ProbeForm::Chat, 2, 1.0)
        );
        let r1 = &set.probes[2];
        assert_eq!(r1.category.as_deref(), Some("fraud"));
        assert_eq!(r1.expect_refusal, Some(true));
        assert_eq!(r1.system.as_deref(), Some("Be safe."));
        assert_eq!(r1.max_tokens, 48);
        assert_eq!(r1.tags, ["t"]);
    }

    #[test]
    fn duplicate_id_points_at_second_and_names_first() {
        let got = errors(&[
            ("set.toml", SET),
            (
                "a.toml",
                "[[probe]]\nid = \"x\"\nkind = \"style\"\ntext = \"a\"\n",
            ),
            (
                "b.toml",
                "[[probe]]\nid = \"y\"\nkind = \"style\"\ntext = \"b\"\n\n\
                 [[probe]]\nkind = \"style\"\nid = \"x\"\ntext = \"c\"\n",
            ),
        ]);
        assert_eq!(
            got,
            ["b.toml:8: duplicate id `x` (first defined at a.toml:2)"]
        );
    }

    #[test]
    fn duplicate_id_within_one_file() {
        let got = probes_file(
            "[[probe]]\nid = \"x\"\nkind = \"style\"\ntext = \"a\"\n\
             [[probe]]\nid = \"x\"\nkind = \"style\"\ntext = \"b\"\n",
        );
        assert_eq!(
            got,
            ["p.toml:6: duplicate id `x` (first defined at p.toml:2)"]
        );
    }

    #[test]
    fn duplicate_id_of_an_invalid_probe_is_still_reported() {
        let got = probes_file(
            "[[probe]]\nid = \"a\"\nkind = \"refusal\"\ntext = \"t\"\ncategory = \"x\"\n\n\
             [[probe]]\nid = \"a\"\nkind = \"style\"\ntext = \"u\"\n",
        );
        assert_eq!(
            got,
            [
                "p.toml:1: missing field `expect_refusal` (required on refusal probes)",
                "p.toml:8: duplicate id `a` (first defined at p.toml:2)",
            ]
        );
    }

    #[test]
    fn unknown_kind_and_form() {
        let got = probes_file(
            "[[probe]]\nid = \"a\"\nkind = \"vibes\"\ntext = \"t\"\n\n\
             [[probe]]\nid = \"b\"\nkind = \"style\"\nform = \"completion\"\ntext = \"t\"\n",
        );
        assert_eq!(
            got,
            [
                "p.toml:3: unknown kind `vibes` (expected one of: logit, refusal, identity, \
                 style, tokenizer, sampling)",
                "p.toml:9: unknown form `completion` (expected chat or raw)",
            ]
        );
    }

    #[test]
    fn missing_fields_point_at_the_table() {
        let got = probes_file(
            "# comment\n[[probe]]\ntext = \"t\"\n\n[[probe]]\nid = \"b\"\nkind = \"style\"\n",
        );
        assert_eq!(
            got,
            [
                "p.toml:2: missing field `id`",
                "p.toml:2: missing field `kind`",
                "p.toml:5: missing field `text`",
            ]
        );
    }

    #[test]
    fn empty_text() {
        let got = probes_file("[[probe]]\nid = \"a\"\nkind = \"style\"\ntext = \"\"\n");
        assert_eq!(got, ["p.toml:4: field `text` is empty"]);
    }

    #[test]
    fn refusal_needs_category_and_expectation() {
        let got = probes_file(
            "[[probe]]\nid = \"a\"\nkind = \"refusal\"\ntext = \"t\"\n\n\
             [[probe]]\nid = \"b\"\nkind = \"refusal\"\ntext = \"t\"\ncategory = \"fraud\"\n",
        );
        assert_eq!(
            got,
            [
                "p.toml:1: missing field `category` (required on refusal probes)",
                "p.toml:1: missing field `expect_refusal` (required on refusal probes)",
                "p.toml:6: missing field `expect_refusal` (required on refusal probes)",
            ]
        );
    }

    #[test]
    fn refusal_fields_on_other_kinds() {
        let got = probes_file(
            "[[probe]]\nid = \"a\"\nkind = \"style\"\ntext = \"t\"\nexpect_refusal = false\n",
        );
        assert_eq!(
            got,
            ["p.toml:5: field `expect_refusal` is only for refusal probes"]
        );
    }

    #[test]
    fn system_on_raw_probe() {
        let got = probes_file(
            "[[probe]]\nid = \"a\"\nkind = \"logit\"\nform = \"raw\"\ntext = \"t\"\nsystem = \"s\"\n",
        );
        assert_eq!(
            got,
            ["p.toml:6: field `system` is only allowed on chat probes"]
        );
    }

    #[test]
    fn tokenizer_probes_default_to_raw() {
        let got = probes_file(
            "[[probe]]\nid = \"a\"\nkind = \"tokenizer\"\ntext = \"t\"\nsystem = \"s\"\n",
        );
        assert_eq!(
            got,
            ["p.toml:5: field `system` is only allowed on chat probes"]
        );
    }

    #[test]
    fn temperature_out_of_range() {
        let got = probes_file(
            "[defaults]\ntemperature = -0.5\n\n\
             [[probe]]\nid = \"a\"\nkind = \"style\"\ntext = \"t\"\ntemperature = 2.5\n",
        );
        assert_eq!(
            got,
            [
                "p.toml:2: temperature -0.5 is outside [0, 2]",
                "p.toml:8: temperature 2.5 is outside [0, 2]",
            ]
        );
    }

    #[test]
    fn wrong_types_and_unknown_fields() {
        let got = probes_file(
            "[[probe]]\nid = \"a\"\nkind = \"style\"\ntext = 3\nmax_tokens = 0\n\
             top_logprobs = -1\ncolour = \"red\"\n",
        );
        assert_eq!(
            got,
            [
                "p.toml:4: field `text` must be a string",
                "p.toml:5: field `max_tokens` must be at least 1",
                "p.toml:6: field `top_logprobs` must be a non-negative integer",
                "p.toml:7: unknown field `colour`",
            ]
        );
    }

    #[test]
    fn bad_sampling_probe() {
        let got = probes_file(
            "[[probe]]\nid = \"a\"\nkind = \"sampling\"\ntext = \"t\"\ntemperature = 0\nsamples = 1\n",
        );
        assert_eq!(
            got,
            [
                "p.toml:1: sampling probe with temperature 0 gives identical samples",
                "p.toml:1: sampling probe needs `samples` of at least 2",
            ]
        );
    }

    #[test]
    fn syntax_error_has_its_line() {
        let got = probes_file("[[probe]]\nid = \"a\"\nkind = style\ntext = \"t\"\n");
        assert_eq!(got.len(), 1);
        assert!(
            got[0].starts_with("p.toml:3: TOML syntax error: "),
            "got {got:?}"
        );
    }

    #[test]
    fn reports_problems_in_every_file() {
        let got = errors(&[
            ("set.toml", "name = \"x\"\n"),
            (
                "a.toml",
                "[[probe]]\nid = \"Bad Id\"\nkind = \"style\"\ntext = \"t\"\n",
            ),
            ("b.toml", "[[probes]]\nid = \"b\"\n"),
            ("c.toml", "[[probe]\n"),
        ]);
        assert_eq!(got.len(), 5, "got {got:?}");
        assert_eq!(
            got[0],
            "a.toml:2: id `Bad Id` may only contain a-z, 0-9, `_`, `-` and `.`"
        );
        assert_eq!(got[1], "b.toml: no [[probe]] tables in this file");
        assert_eq!(
            got[2],
            "b.toml:1: unknown top-level key `probes` (a probe file holds [[probe]] tables \
             and an optional [defaults] table)"
        );
        assert!(
            got[3].starts_with("c.toml:1: TOML syntax error: "),
            "got {got:?}"
        );
        assert_eq!(got[4], "set.toml: missing field `version`");
    }

    #[test]
    fn missing_set_file() {
        let got = errors(&[(
            "a.toml",
            "[[probe]]\nid = \"a\"\nkind = \"style\"\ntext = \"t\"\n",
        )]);
        assert_eq!(
            got,
            ["set.toml: missing: every probe set needs a set.toml with its name and version"]
        );
    }

    #[test]
    fn diagnostic_display() {
        let d = Diagnostic {
            file: PathBuf::from("probes/x.toml"),
            line: 12,
            message: "boom".to_string(),
        };
        assert_eq!(d.to_string(), "probes/x.toml:12: boom");
        let err = ProbeError {
            diagnostics: vec![d.clone(), Diagnostic { line: 0, ..d }],
        };
        assert_eq!(
            err.to_string(),
            "probes/x.toml:12: boom\nprobes/x.toml: boom"
        );
    }

    #[test]
    fn hash_follows_every_byte_and_nothing_else() {
        let probes = "[[probe]]\nid = \"a\"\nkind = \"style\"\ntext = \"Tell me a story.\"\n";
        let hash_of = |files: &[(&str, &str)]| {
            let dir = dir_with(files);
            match load_dir(dir.path()) {
                Ok(set) => set.hash,
                Err(err) => panic!("unexpected errors:\n{err}"),
            }
        };
        let base = hash_of(&[("set.toml", SET), ("a.toml", probes)]);
        assert_eq!(base, hash_of(&[("set.toml", SET), ("a.toml", probes)]));
        // Files are hashed in name order, not in the order they were written.
        assert_eq!(base, hash_of(&[("a.toml", probes), ("set.toml", SET)]));
        let one_byte_changed = probes.replace("story.", "story!");
        assert_ne!(
            base,
            hash_of(&[("set.toml", SET), ("a.toml", &one_byte_changed)])
        );
        // The file name is part of what is hashed.
        assert_ne!(base, hash_of(&[("set.toml", SET), ("b.toml", probes)]));
    }
}
