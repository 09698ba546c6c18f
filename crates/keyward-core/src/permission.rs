//! Permission queries over scopes: `orders:read AND (billing:read OR billing:admin)`.
//!
//! Grammar (AND binds tighter than OR; keywords are case-insensitive):
//! ```text
//! query := or
//! or    := and ("OR" and)*
//! and   := atom ("AND" atom)*
//! atom  := SCOPE | "(" or ")"
//! ```

use std::fmt;

use crate::scope;

/// A parsed permission query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Permission {
    Scope(String),
    And(Vec<Permission>),
    Or(Vec<Permission>),
}

/// Why a query did not parse, with the byte offset where the problem starts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} at position {position}")]
pub struct PermissionError {
    pub position: usize,
    pub message: String,
}

impl PermissionError {
    fn new(position: usize, message: impl Into<String>) -> Self {
        PermissionError {
            position,
            message: message.into(),
        }
    }
}

/// Queries longer than this are refused (they come from untrusted callers).
pub const MAX_QUERY_LEN: usize = 4096;
/// Nesting deeper than this is refused, so parsing cannot exhaust the stack.
pub const MAX_DEPTH: usize = 32;

impl Permission {
    pub fn parse(query: &str) -> Result<Permission, PermissionError> {
        if query.len() > MAX_QUERY_LEN {
            return Err(PermissionError::new(
                MAX_QUERY_LEN,
                format!("query longer than {MAX_QUERY_LEN} bytes"),
            ));
        }
        let tokens = tokenize(query)?;
        if tokens.is_empty() {
            return Err(PermissionError::new(0, "empty query"));
        }
        let mut parser = Parser {
            tokens: &tokens,
            next: 0,
            end: query.len(),
        };
        let permission = parser.or(0, "expected a scope or '('")?;
        match parser.peek() {
            None => Ok(permission),
            Some(t) if t.kind == Kind::RParen => Err(PermissionError::new(
                t.pos,
                "unbalanced parenthesis: ')' without a matching '('",
            )),
            Some(t) => Err(PermissionError::new(
                t.pos,
                format!(
                    "unexpected token {}; expected AND, OR or the end",
                    t.describe()
                ),
            )),
        }
    }

    /// Whether `granted` satisfies the query (wildcards as in `scope::grants`).
    pub fn evaluate<S: AsRef<str>>(&self, granted: &[S]) -> bool {
        match self {
            Permission::Scope(s) => scope::any_grants(granted, s),
            Permission::And(all) => all.iter().all(|p| p.evaluate(granted)),
            Permission::Or(any) => any.iter().any(|p| p.evaluate(granted)),
        }
    }

    /// Every scope the query names, in order of appearance.
    pub fn scopes(&self) -> Vec<&str> {
        fn walk<'a>(p: &'a Permission, out: &mut Vec<&'a str>) {
            match p {
                Permission::Scope(s) => out.push(s),
                Permission::And(v) | Permission::Or(v) => v.iter().for_each(|c| walk(c, out)),
            }
        }
        let mut out = Vec::new();
        walk(self, &mut out);
        out
    }
}

/// Prints the query in a form that [`Permission::parse`] reads back to an equivalent query
/// (same evaluation), with only the parentheses the precedence needs.
impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn child(f: &mut fmt::Formatter<'_>, p: &Permission, parenthesise: bool) -> fmt::Result {
            if parenthesise {
                write!(f, "({p})")
            } else {
                write!(f, "{p}")
            }
        }
        match self {
            Permission::Scope(s) => f.write_str(s),
            Permission::And(v) | Permission::Or(v) => {
                let is_and = matches!(self, Permission::And(_));
                let sep = if is_and { " AND " } else { " OR " };
                for (i, p) in v.iter().enumerate() {
                    if i > 0 {
                        f.write_str(sep)?;
                    }
                    // An OR inside an AND needs parentheses; parenthesising a same-kind
                    // child too keeps an unflattened tree's shape visible.
                    let parenthesise = match p {
                        Permission::Scope(_) => false,
                        Permission::And(_) => is_and,
                        Permission::Or(_) => true,
                    };
                    child(f, p, parenthesise)?;
                }
                Ok(())
            }
        }
    }
}

impl std::str::FromStr for Permission {
    type Err = PermissionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Permission::parse(s)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Scope,
    And,
    Or,
    LParen,
    RParen,
}

#[derive(Debug, Clone, Copy)]
struct Token<'a> {
    kind: Kind,
    text: &'a str,
    pos: usize,
}

impl Token<'_> {
    fn describe(&self) -> String {
        match self.kind {
            Kind::Scope => format!("{:?}", self.text),
            Kind::And => "AND".to_owned(),
            Kind::Or => "OR".to_owned(),
            Kind::LParen => "'('".to_owned(),
            Kind::RParen => "')'".to_owned(),
        }
    }
}

fn is_word_byte(b: u8) -> bool {
    scope::is_scope_byte(b) || b == b'*'
}

fn tokenize(query: &str) -> Result<Vec<Token<'_>>, PermissionError> {
    let bytes = query.as_bytes();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        let (kind, len) = match b {
            b'(' => (Kind::LParen, 1),
            b')' => (Kind::RParen, 1),
            _ if is_word_byte(b) => {
                let len = bytes[i..].iter().take_while(|&&b| is_word_byte(b)).count();
                let word = &query[i..i + len];
                let kind = if word.eq_ignore_ascii_case("and") {
                    Kind::And
                } else if word.eq_ignore_ascii_case("or") {
                    Kind::Or
                } else {
                    if let Err(e) = scope::validate(word) {
                        return Err(PermissionError::new(
                            i,
                            format!("invalid scope {word:?}: {}", e.reason),
                        ));
                    }
                    Kind::Scope
                };
                (kind, len)
            }
            _ => {
                // `i` is a char boundary: every byte consumed so far was ASCII.
                let c = query[i..].chars().next().unwrap_or('\u{fffd}');
                return Err(PermissionError::new(
                    i,
                    format!("unexpected character {c:?}"),
                ));
            }
        };
        tokens.push(Token {
            kind,
            text: &query[i..i + len],
            pos: i,
        });
        i += len;
    }
    Ok(tokens)
}

struct Parser<'t, 'q> {
    tokens: &'t [Token<'q>],
    next: usize,
    /// Byte length of the query, the position reported for "end of query".
    end: usize,
}

impl<'q> Parser<'_, 'q> {
    fn peek(&self) -> Option<Token<'q>> {
        self.tokens.get(self.next).copied()
    }

    fn eat(&mut self, kind: Kind) -> bool {
        if self.peek().is_some_and(|t| t.kind == kind) {
            self.next += 1;
            true
        } else {
            false
        }
    }

    /// `context` opens the error message when the first atom is missing.
    fn or(&mut self, depth: usize, context: &str) -> Result<Permission, PermissionError> {
        let mut terms = vec![self.and(depth, context)?];
        while self.eat(Kind::Or) {
            terms.push(self.and(depth, "expected a scope after OR")?);
        }
        Ok(combine(terms, Kind::Or))
    }

    fn and(&mut self, depth: usize, context: &str) -> Result<Permission, PermissionError> {
        let mut terms = vec![self.atom(depth, context)?];
        while self.eat(Kind::And) {
            terms.push(self.atom(depth, "expected a scope after AND")?);
        }
        Ok(combine(terms, Kind::And))
    }

    fn atom(&mut self, depth: usize, context: &str) -> Result<Permission, PermissionError> {
        let Some(t) = self.peek() else {
            return Err(PermissionError::new(
                self.end,
                format!("{context}, found the end of the query"),
            ));
        };
        match t.kind {
            Kind::Scope => {
                self.next += 1;
                Ok(Permission::Scope(t.text.to_owned()))
            }
            Kind::LParen => {
                if depth >= MAX_DEPTH {
                    return Err(PermissionError::new(
                        t.pos,
                        format!("parentheses nested deeper than {MAX_DEPTH}"),
                    ));
                }
                self.next += 1;
                let inner = self.or(depth + 1, "expected a scope or '(' after '('")?;
                match self.peek() {
                    Some(close) if close.kind == Kind::RParen => {
                        self.next += 1;
                        Ok(inner)
                    }
                    Some(other) => Err(PermissionError::new(
                        other.pos,
                        format!(
                            "unexpected token {}; expected AND, OR or ')'",
                            other.describe()
                        ),
                    )),
                    None => Err(PermissionError::new(
                        t.pos,
                        "unbalanced parenthesis: '(' is never closed",
                    )),
                }
            }
            _ => Err(PermissionError::new(
                t.pos,
                format!("{context}, found {}", t.describe()),
            )),
        }
    }
}

/// Builds an AND or OR node, flattening children of the same kind (`(a AND b) AND c` is
/// `a AND b AND c`) so evaluation and printing see the simplest tree.
fn combine(terms: Vec<Permission>, kind: Kind) -> Permission {
    if terms.len() == 1 {
        return terms.into_iter().next().expect("one term");
    }
    let mut flat = Vec::with_capacity(terms.len());
    for t in terms {
        match (kind, t) {
            (Kind::And, Permission::And(inner)) | (Kind::Or, Permission::Or(inner)) => {
                flat.extend(inner)
            }
            (_, t) => flat.push(t),
        }
    }
    if kind == Kind::And {
        Permission::And(flat)
    } else {
        Permission::Or(flat)
    }
}
