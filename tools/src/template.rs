//! Record templates, as kcat's `-f`: literal text with `%` fields, read by
//! `mamba produce --format` and written by `mamba consume --format`.
//!
//! Fields: `%t` topic, `%p` partition, `%o` offset, `%k` key, `%v` value,
//! `%h` headers (`k=v,k2=v2`), `%T` timestamp (ms since the epoch). Escapes:
//! `\n`, `\t`, `\r`, `\0`, `\\`, and `%%` for a percent sign. Keys and
//! values are raw bytes both ways; nothing is re-encoded.

use mamba_net::client::{ConsumerRecord, Delivered};
use std::io::BufRead;

/// A record as a template reads it: copied out (`ConsumerRecord`) or
/// borrowed from a fetch answer (`Delivered`, which `mamba consume` prints
/// without copying).
pub trait RecordFields {
    fn topic(&self) -> &str;
    fn partition(&self) -> u32;
    fn offset(&self) -> u64;
    fn timestamp_ms(&self) -> i64;
    fn key(&self) -> Option<&[u8]>;
    fn value(&self) -> &[u8];
    fn for_each_header(&self, each: &mut dyn FnMut(&str, &[u8]));
}

impl RecordFields for ConsumerRecord {
    fn topic(&self) -> &str {
        &self.topic
    }
    fn partition(&self) -> u32 {
        self.partition
    }
    fn offset(&self) -> u64 {
        self.offset
    }
    fn timestamp_ms(&self) -> i64 {
        self.timestamp_ms
    }
    fn key(&self) -> Option<&[u8]> {
        self.key.as_deref()
    }
    fn value(&self) -> &[u8] {
        &self.value
    }
    fn for_each_header(&self, each: &mut dyn FnMut(&str, &[u8])) {
        for (name, value) in &self.headers {
            each(name, value);
        }
    }
}

impl RecordFields for Delivered<'_> {
    fn topic(&self) -> &str {
        self.topic
    }
    fn partition(&self) -> u32 {
        self.partition
    }
    fn offset(&self) -> u64 {
        self.record.offset.0
    }
    fn timestamp_ms(&self) -> i64 {
        self.record.timestamp_ms
    }
    fn key(&self) -> Option<&[u8]> {
        self.record.key()
    }
    fn value(&self) -> &[u8] {
        self.record.value()
    }
    fn for_each_header(&self, each: &mut dyn FnMut(&str, &[u8])) {
        for (name, value) in self.record.headers() {
            each(name, value);
        }
    }
}

/// The fields of every form, for messages.
pub const TEMPLATE_FIELDS: &str = "%t topic, %p partition, %o offset, %k key, %v value, \
     %h headers, %T timestamp ms; escapes \\n \\t \\r \\0 \\\\ and %%";

/// A record field a template names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    Topic,
    Partition,
    Offset,
    Key,
    Value,
    Headers,
    TimestampMs,
}

impl Field {
    fn from_letter(letter: char) -> Option<Field> {
        Some(match letter {
            't' => Field::Topic,
            'p' => Field::Partition,
            'o' => Field::Offset,
            'k' => Field::Key,
            'v' => Field::Value,
            'h' => Field::Headers,
            'T' => Field::TimestampMs,
            _ => return None,
        })
    }

    pub fn placeholder(self) -> &'static str {
        match self {
            Field::Topic => "%t",
            Field::Partition => "%p",
            Field::Offset => "%o",
            Field::Key => "%k",
            Field::Value => "%v",
            Field::Headers => "%h",
            Field::TimestampMs => "%T",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    Text(Vec<u8>),
    Field(Field),
}

/// A parsed template: literal text and fields, in order; adjacent text
/// pieces are merged, so text and fields alternate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    pieces: Vec<Piece>,
}

impl Template {
    pub fn parse(text: &str) -> Result<Template, String> {
        let bad = |why: String| format!("bad template {text:?}: {why}; it takes {TEMPLATE_FIELDS}");
        let mut pieces: Vec<Piece> = Vec::new();
        let push_text = |pieces: &mut Vec<Piece>, bytes: &[u8]| match pieces.last_mut() {
            Some(Piece::Text(t)) => t.extend_from_slice(bytes),
            _ => pieces.push(Piece::Text(bytes.to_vec())),
        };
        let mut chars = text.chars();
        while let Some(c) = chars.next() {
            match c {
                '%' => match chars.next() {
                    Some('%') => push_text(&mut pieces, b"%"),
                    Some(letter) => match Field::from_letter(letter) {
                        Some(field) => pieces.push(Piece::Field(field)),
                        None => return Err(bad(format!("%{letter} is no field"))),
                    },
                    None => return Err(bad("it ends in a lone %".into())),
                },
                '\\' => {
                    let byte = match chars.next() {
                        Some('n') => b'\n',
                        Some('t') => b'\t',
                        Some('r') => b'\r',
                        Some('0') => 0,
                        Some('\\') => b'\\',
                        Some(other) => return Err(bad(format!("\\{other} is no escape"))),
                        None => return Err(bad("it ends in a lone \\".into())),
                    };
                    push_text(&mut pieces, &[byte]);
                }
                c => push_text(&mut pieces, c.encode_utf8(&mut [0; 4]).as_bytes()),
            }
        }
        Ok(Template { pieces })
    }

    /// Appends `record` as the template writes it to `out`. A missing key
    /// writes nothing.
    pub fn render(&self, record: &impl RecordFields, out: &mut Vec<u8>) {
        use std::io::Write;
        for piece in &self.pieces {
            // Writing into a Vec cannot fail.
            let _infallible = match piece {
                Piece::Text(t) => out.write_all(t),
                Piece::Field(Field::Topic) => out.write_all(record.topic().as_bytes()),
                Piece::Field(Field::Partition) => write!(out, "{}", record.partition()),
                Piece::Field(Field::Offset) => write!(out, "{}", record.offset()),
                Piece::Field(Field::Key) => out.write_all(record.key().unwrap_or(b"")),
                Piece::Field(Field::Value) => out.write_all(record.value()),
                Piece::Field(Field::TimestampMs) => write!(out, "{}", record.timestamp_ms()),
                Piece::Field(Field::Headers) => {
                    let mut first = true;
                    record.for_each_header(&mut |name, value| {
                        if !first {
                            out.push(b',');
                        }
                        first = false;
                        out.extend_from_slice(name.as_bytes());
                        out.push(b'=');
                        out.extend_from_slice(value);
                    });
                    Ok(())
                }
            };
        }
    }

    /// The template as a reader of input records: fields `%k`, `%v`, `%p`,
    /// `%T`, each followed by the text that ends it, the last text ending
    /// the record.
    pub fn for_input(&self) -> Result<InputTemplate, String> {
        let bad = |why: &str| format!("a --format template for input {why}, e.g. '%k:%v\\n'");
        let mut pieces = self.pieces.iter().peekable();
        let head = match pieces.peek() {
            Some(Piece::Text(t)) => {
                let head = t.clone();
                pieces.next();
                head
            }
            _ => Vec::new(),
        };
        let mut steps: Vec<(Field, Vec<u8>)> = Vec::new();
        while let Some(piece) = pieces.next() {
            let Piece::Field(field) = piece else {
                unreachable!("text pieces are merged, so a field follows text")
            };
            if !matches!(field, Field::Key | Field::Value | Field::Partition | Field::TimestampMs) {
                return Err(bad(&format!("takes %k, %v, %p and %T, not {}", field.placeholder())));
            }
            if steps.iter().any(|(f, _)| f == field) {
                return Err(bad(&format!("names {} once", field.placeholder())));
            }
            match pieces.next() {
                Some(Piece::Text(t)) => steps.push((*field, t.clone())),
                _ => {
                    return Err(bad(&format!(
                        "needs text after {} to end it (two fields in a row, or a field at \
                         the end, leave the record's end unknown)",
                        field.placeholder()
                    )))
                }
            }
        }
        if !steps.iter().any(|(f, _)| *f == Field::Value) {
            return Err(bad("names %v"));
        }
        Ok(InputTemplate { head, steps })
    }
}

/// A template that splits input into records; see [`Template::for_input`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InputTemplate {
    /// Text each record starts with.
    head: Vec<u8>,
    /// Each field and the text that ends it; the last text ends the record.
    steps: Vec<(Field, Vec<u8>)>,
}

/// The fields of one input record, as read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReadFields {
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    pub partition: Option<u32>,
    pub timestamp_ms: Option<i64>,
}

/// Why an input record could not be read.
#[derive(Debug)]
pub enum ReadError {
    Io(std::io::Error),
    /// The input does not follow the template (or a field is too long).
    Bad(String),
}

impl InputTemplate {
    pub fn has(&self, field: Field) -> bool {
        self.steps.iter().any(|(f, _)| *f == field)
    }

    /// Reads the next record; `None` at the end of the input. The last
    /// record may lack its final text (as a last line may lack its
    /// newline). A field longer than `field_bytes_max` is an error.
    pub fn read(
        &self,
        input: &mut impl BufRead,
        field_bytes_max: usize,
    ) -> Result<Option<ReadFields>, ReadError> {
        let mut fields = ReadFields::default();
        let mut started = false;
        if !self.head.is_empty() {
            let mut head = Vec::with_capacity(self.head.len());
            let limit = self.head.len() as u64;
            std::io::Read::read_to_end(&mut std::io::Read::take(&mut *input, limit), &mut head)
                .map_err(ReadError::Io)?;
            if head.is_empty() {
                return Ok(None);
            }
            if head != self.head {
                return Err(ReadError::Bad(format!(
                    "it starts with '{}', not the template's '{}'",
                    head.escape_ascii(),
                    self.head.escape_ascii()
                )));
            }
            started = true;
        }
        let mut bytes = Vec::new();
        for (i, (field, end)) in self.steps.iter().enumerate() {
            bytes.clear();
            let found =
                read_until_text(input, end, &mut bytes, field_bytes_max).map_err(ReadError::Io)?;
            let last = i + 1 == self.steps.len();
            if !found {
                if bytes.len() >= field_bytes_max {
                    return Err(ReadError::Bad(format!(
                        "{} runs past {field_bytes_max} bytes without the text '{}' that ends it",
                        field.placeholder(),
                        end.escape_ascii()
                    )));
                }
                if !started && bytes.is_empty() {
                    return Ok(None);
                }
                if !last {
                    return Err(ReadError::Bad(format!(
                        "the input ends before the text '{}' that ends {}",
                        end.escape_ascii(),
                        field.placeholder()
                    )));
                }
            }
            started = true;
            // A field cannot run over the end of its record: a line
            // without the separator is an error, not the key of the next.
            let record_end = &self.steps[self.steps.len() - 1].1;
            if !last && bytes.windows(record_end.len()).any(|w| w == record_end.as_slice()) {
                return Err(ReadError::Bad(format!(
                    "the record ends ('{}') before the text '{}' that ends {}",
                    record_end.escape_ascii(),
                    end.escape_ascii(),
                    field.placeholder()
                )));
            }
            let number = |what: &str| {
                let text = std::str::from_utf8(&bytes).unwrap_or_default().trim().to_string();
                text.parse::<i64>().map_err(|_| {
                    ReadError::Bad(format!(
                        "{} wants {what}, got '{}'",
                        field.placeholder(),
                        bytes.escape_ascii()
                    ))
                })
            };
            match field {
                Field::Key => fields.key = Some(bytes.clone()),
                Field::Value => fields.value = bytes.clone(),
                Field::Partition => {
                    let p = number("a partition number")?;
                    fields.partition = Some(u32::try_from(p).map_err(|_| {
                        ReadError::Bad(format!("%p wants a partition number, got {p}"))
                    })?);
                }
                Field::TimestampMs => fields.timestamp_ms = Some(number("ms since the epoch")?),
                Field::Topic | Field::Offset | Field::Headers => {
                    unreachable!("for_input admits no {}", field.placeholder())
                }
            }
        }
        Ok(Some(fields))
    }
}

/// Reads into `out` up to the first occurrence of `end` (consumed, not kept)
/// and says whether it came; stops early, without it, at the end of the
/// input or once `out` holds `bytes_max` bytes.
pub fn read_until_text(
    input: &mut impl BufRead,
    end: &[u8],
    out: &mut Vec<u8>,
    bytes_max: usize,
) -> std::io::Result<bool> {
    let Some(&last) = end.last() else {
        return Ok(false);
    };
    loop {
        let room = (bytes_max + end.len()).saturating_sub(out.len()) as u64;
        let n = std::io::Read::take(&mut *input, room).read_until(last, out)?;
        if out.ends_with(end) {
            out.truncate(out.len() - end.len());
            return Ok(true);
        }
        if n == 0 || out.last() != Some(&last) || out.len() >= bytes_max {
            out.truncate(out.len().min(bytes_max));
            return Ok(false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> ConsumerRecord {
        ConsumerRecord {
            topic: "t".into(),
            partition: 2,
            offset: 41,
            timestamp_ms: 1_700_000_000_000,
            key: Some(b"k1".to_vec()),
            value: vec![0xff, b'v'],
            headers: vec![("a".into(), b"1".to_vec()), ("b".into(), b"2".to_vec())],
        }
    }

    fn render(template: &str, record: &ConsumerRecord) -> Vec<u8> {
        let mut out = Vec::new();
        Template::parse(template).expect("template").render(record, &mut out);
        out
    }

    #[test]
    fn every_field_and_escape_renders_as_kcat_would() {
        let r = record();
        assert_eq!(render("%t %p %o %T\\t%%\\\\\\n", &r), b"t 2 41 1700000000000\t%\\\n");
        assert_eq!(render("%k=%v|%h", &r), b"k1=\xffv|a=1,b=2");
        let keyless = ConsumerRecord { key: None, headers: vec![], ..r };
        assert_eq!(render("[%k][%h]%v", &keyless), b"[][]\xffv");
    }

    #[test]
    fn bad_templates_name_what_is_wrong_and_the_fields() {
        for (text, named) in [("%x", "%x"), ("50%", "lone %"), ("\\q", "\\q"), ("a\\", "lone \\")] {
            let e = Template::parse(text).expect_err(text);
            assert!(e.contains(named) && e.contains("%v value"), "{e}");
        }
    }

    fn read_all(template: &str, input: &[u8]) -> Result<Vec<ReadFields>, String> {
        let t = Template::parse(template)?.for_input()?;
        let mut input = input;
        let mut out = Vec::new();
        loop {
            match t.read(&mut input, 64) {
                Ok(Some(r)) => out.push(r),
                Ok(None) => return Ok(out),
                Err(ReadError::Bad(e)) => return Err(e),
                Err(ReadError::Io(e)) => return Err(e.to_string()),
            }
        }
    }

    fn kv(key: &str, value: &[u8]) -> ReadFields {
        ReadFields { key: Some(key.into()), value: value.to_vec(), ..ReadFields::default() }
    }

    #[test]
    fn input_splits_at_the_first_separator_and_ends_at_the_trailing_text() {
        let got = read_all("%k:%v\\n", b"a:1\nb:2:3\n:\xff\nlast:x").expect("records");
        assert_eq!(got, [kv("a", b"1"), kv("b", b"2:3"), kv("", b"\xff"), kv("last", b"x")]);
        let got = read_all("<%p|%T>%k=%v;;", b"<1|5>a=b;;<0|6>c=d;x;;").expect("records");
        assert_eq!(
            got,
            [
                ReadFields { partition: Some(1), timestamp_ms: Some(5), ..kv("a", b"b") },
                ReadFields { partition: Some(0), timestamp_ms: Some(6), ..kv("c", b"d;x") },
            ]
        );
        assert_eq!(read_all("%v\\n", b"").expect("nothing"), []);
    }

    #[test]
    fn input_that_breaks_the_template_is_an_error_naming_why() {
        for (template, input, named) in [
            ("%k:%v\\n", &b"no separator\n"[..], "ends %k"),
            ("%k:%v\\n", &b"no separator\nnext:line\n"[..], "the record ends ('\\n') before"),
            ("<%v>", b"x>", "starts with"),
            ("%p:%v\\n", b"two:x\n", "partition number"),
            ("%k:%v\\n", &[b'y'; 100], "runs past 64 bytes"),
        ] {
            let e = read_all(template, input).expect_err(template);
            assert!(e.contains(named), "{template}: {e}");
        }
        for (template, named) in [
            ("%k%v\\n", "needs text after %k"),
            ("%k:%v", "needs text after %v"),
            ("%k\\n", "names %v"),
            ("%o:%v\\n", "not %o"),
            ("%v:%v\\n", "names %v once"),
        ] {
            let e = read_all(template, b"").expect_err(template);
            assert!(e.contains(named), "{template}: {e}");
        }
    }
}
