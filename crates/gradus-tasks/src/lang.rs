//! A tiny imperative language: lexer, parser, printer and interpreter.
//!
//! ```text
//! program := stmt*
//! stmt    := "let" IDENT "=" expr ";"          declare (shadows an outer or earlier variable)
//!          | IDENT "=" expr ";"                assign to an existing variable
//!          | "print" expr ";"                  write the value and a line break
//!          | "if" expr block ("else" (block | if-stmt))?
//!          | "while" expr block
//! block   := "{" stmt* "}"                     a new scope for `let`
//! expr    := or;  or := and ("||" and)*;  and := cmp ("&&" cmp)*
//! cmp     := add (("==" | "!=" | "<" | "<=" | ">" | ">=") add)?     (comparisons do not chain)
//! add     := mul (("+" | "-") mul)*;  mul := unary (("*" | "/" | "%") unary)*
//! unary   := ("-" | "!") unary | INT | IDENT | "(" expr ")"
//! ```
//! `#` starts a comment running to the end of the line, so a corpus document such as
//! `"let a = 3;\nprint a * 2;\n# output: 6"` is itself a valid program.
//!
//! Values are `i64`. Arithmetic is checked: overflow and division (or `%`) by zero are errors.
//! `/` and `%` truncate toward zero (as in C and Rust). Comparisons, `!`, `&&` and `||` give 0 or 1;
//! a condition is true when it is not 0; `&&` and `||` short-circuit.
//!
//! Every statement executed and every loop test counts one step; exceeding [`Limits::max_steps`] is an
//! error, so no program runs forever. Expressions deeper than [`MAX_EXPR_DEPTH`] or blocks nested
//! deeper than [`MAX_BLOCK_DEPTH`] are refused by the parser, so no input can overflow the stack.
//! Every error carries the 1-based line and column of the token at fault.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

/// Deepest expression tree the parser accepts (a chain `1+1+...` of n terms has depth n).
pub const MAX_EXPR_DEPTH: usize = 200;
/// Deepest nesting of `{ }` blocks the parser accepts.
pub const MAX_BLOCK_DEPTH: usize = 64;

/// A 1-based source position. Built programs (not parsed) carry `Pos::default()` (0:0).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
}

/// What went wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// A character no token starts with.
    UnexpectedChar(char),
    /// An integer literal beyond `i64`.
    IntegerTooLarge(String),
    /// A parse error: what was expected and what was found.
    Syntax {
        expected: String,
        found: String,
    },
    /// `a < b < c`.
    ChainedComparison,
    /// Expression or block nesting beyond [`MAX_EXPR_DEPTH`] / [`MAX_BLOCK_DEPTH`].
    TooDeep,
    UndefinedVariable(String),
    DivisionByZero,
    /// Arithmetic overflow of `i64`.
    Overflow,
    /// The step limit was exceeded.
    StepLimit(u64),
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorKind::UnexpectedChar(c) => write!(f, "unexpected character {c:?}"),
            ErrorKind::IntegerTooLarge(s) => write!(f, "integer {s} does not fit in 64 bits"),
            ErrorKind::Syntax { expected, found } => {
                write!(f, "expected {expected}, found {found}")
            }
            ErrorKind::ChainedComparison => {
                write!(f, "comparison operators cannot be chained; use parentheses")
            }
            ErrorKind::TooDeep => write!(f, "nested too deeply"),
            ErrorKind::UndefinedVariable(v) => write!(f, "undefined variable `{v}`"),
            ErrorKind::DivisionByZero => write!(f, "division by zero"),
            ErrorKind::Overflow => write!(f, "integer overflow"),
            ErrorKind::StepLimit(n) => write!(f, "step limit of {n} exceeded (infinite loop?)"),
        }
    }
}

/// An error at a source position.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProgramError {
    pub kind: ErrorKind,
    pub pos: Pos,
}

impl ProgramError {
    fn new(kind: ErrorKind, pos: Pos) -> Self {
        Self { kind, pos }
    }
    pub fn line(&self) -> usize {
        self.pos.line
    }
    pub fn col(&self) -> usize {
        self.pos.col
    }
    /// Whether the program was rejected before running (lexing or parsing).
    pub fn is_syntax(&self) -> bool {
        matches!(
            self.kind,
            ErrorKind::UnexpectedChar(_)
                | ErrorKind::IntegerTooLarge(_)
                | ErrorKind::Syntax { .. }
                | ErrorKind::ChainedComparison
                | ErrorKind::TooDeep
        )
    }
}

impl fmt::Display for ProgramError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "line {}, column {}: {}",
            self.pos.line, self.pos.col, self.kind
        )
    }
}

impl std::error::Error for ProgramError {}

impl From<ProgramError> for gradus_tensor::Error {
    fn from(e: ProgramError) -> Self {
        gradus_tensor::Error::msg(format!("program: {e}"))
    }
}

// ---------------------------------------------------------------------------------------------
// AST

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UnOp {
    Neg,
    Not,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    And,
    Or,
}

impl BinOp {
    /// Binding strength: higher binds tighter.
    pub fn precedence(self) -> u8 {
        match self {
            BinOp::Or => 1,
            BinOp::And => 2,
            BinOp::Eq | BinOp::Ne | BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge => 3,
            BinOp::Add | BinOp::Sub => 4,
            BinOp::Mul | BinOp::Div | BinOp::Rem => 5,
        }
    }

    pub fn is_comparison(self) -> bool {
        self.precedence() == 3
    }

    pub fn symbol(self) -> &'static str {
        match self {
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::Rem => "%",
            BinOp::Eq => "==",
            BinOp::Ne => "!=",
            BinOp::Lt => "<",
            BinOp::Le => "<=",
            BinOp::Gt => ">",
            BinOp::Ge => ">=",
            BinOp::And => "&&",
            BinOp::Or => "||",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExprKind {
    Int(i64),
    Var(String),
    Unary(UnOp, Box<Expr>),
    Binary(BinOp, Box<Expr>, Box<Expr>),
}

/// An expression; `pos` is the literal, the variable, or the operator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expr {
    pub kind: ExprKind,
    pub pos: Pos,
}

impl Expr {
    pub fn int(v: i64) -> Self {
        Self {
            kind: ExprKind::Int(v),
            pos: Pos::default(),
        }
    }
    pub fn var(name: impl Into<String>) -> Self {
        Self {
            kind: ExprKind::Var(name.into()),
            pos: Pos::default(),
        }
    }
    pub fn unary(op: UnOp, e: Expr) -> Self {
        Self {
            kind: ExprKind::Unary(op, Box::new(e)),
            pos: Pos::default(),
        }
    }
    pub fn binary(op: BinOp, l: Expr, r: Expr) -> Self {
        Self {
            kind: ExprKind::Binary(op, Box::new(l), Box::new(r)),
            pos: Pos::default(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StmtKind {
    Let {
        name: String,
        value: Expr,
    },
    Assign {
        name: String,
        value: Expr,
    },
    Print(Expr),
    /// `else if` is an `otherwise` block holding one `If`.
    If {
        cond: Expr,
        then: Vec<Stmt>,
        otherwise: Vec<Stmt>,
    },
    While {
        cond: Expr,
        body: Vec<Stmt>,
    },
}

/// A statement; `pos` is its first token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stmt {
    pub kind: StmtKind,
    pub pos: Pos,
}

impl Stmt {
    pub fn new(kind: StmtKind) -> Self {
        Self {
            kind,
            pos: Pos::default(),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Program {
    pub stmts: Vec<Stmt>,
}

// ---------------------------------------------------------------------------------------------
// Lexer

#[derive(Clone, Debug, PartialEq, Eq)]
enum Tok {
    Int(i64),
    Ident(String),
    Let,
    If,
    Else,
    While,
    Print,
    Op(BinOp),
    Bang,
    Assign,
    LParen,
    RParen,
    LBrace,
    RBrace,
    Semi,
    Eof,
}

impl fmt::Display for Tok {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tok::Int(v) => write!(f, "integer {v}"),
            Tok::Ident(s) => write!(f, "`{s}`"),
            Tok::Let => f.write_str("`let`"),
            Tok::If => f.write_str("`if`"),
            Tok::Else => f.write_str("`else`"),
            Tok::While => f.write_str("`while`"),
            Tok::Print => f.write_str("`print`"),
            Tok::Op(op) => write!(f, "`{}`", op.symbol()),
            Tok::Bang => f.write_str("`!`"),
            Tok::Assign => f.write_str("`=`"),
            Tok::LParen => f.write_str("`(`"),
            Tok::RParen => f.write_str("`)`"),
            Tok::LBrace => f.write_str("`{`"),
            Tok::RBrace => f.write_str("`}`"),
            Tok::Semi => f.write_str("`;`"),
            Tok::Eof => f.write_str("end of input"),
        }
    }
}

fn lex(src: &str) -> Result<Vec<(Tok, Pos)>, ProgramError> {
    let chars: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let (mut i, mut line, mut col) = (0usize, 1usize, 1usize);
    while i < chars.len() {
        let c = chars[i];
        let pos = Pos { line, col };
        if c == '\n' {
            i += 1;
            line += 1;
            col = 1;
            continue;
        }
        if c.is_whitespace() {
            i += 1;
            col += 1;
            continue;
        }
        if c == '#' {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
            continue;
        }
        if c.is_ascii_digit() {
            let start = i;
            while i < chars.len() && chars[i].is_ascii_digit() {
                i += 1;
            }
            let text: String = chars[start..i].iter().collect();
            col += i - start;
            let v = text
                .parse::<i64>()
                .map_err(|_| ProgramError::new(ErrorKind::IntegerTooLarge(text.clone()), pos))?;
            out.push((Tok::Int(v), pos));
            continue;
        }
        if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            col += i - start;
            let tok = match word.as_str() {
                "let" => Tok::Let,
                "if" => Tok::If,
                "else" => Tok::Else,
                "while" => Tok::While,
                "print" => Tok::Print,
                _ => Tok::Ident(word),
            };
            out.push((tok, pos));
            continue;
        }
        let next = chars.get(i + 1).copied();
        let (tok, width) = match (c, next) {
            ('=', Some('=')) => (Tok::Op(BinOp::Eq), 2),
            ('!', Some('=')) => (Tok::Op(BinOp::Ne), 2),
            ('<', Some('=')) => (Tok::Op(BinOp::Le), 2),
            ('>', Some('=')) => (Tok::Op(BinOp::Ge), 2),
            ('&', Some('&')) => (Tok::Op(BinOp::And), 2),
            ('|', Some('|')) => (Tok::Op(BinOp::Or), 2),
            ('<', _) => (Tok::Op(BinOp::Lt), 1),
            ('>', _) => (Tok::Op(BinOp::Gt), 1),
            ('+', _) => (Tok::Op(BinOp::Add), 1),
            ('-', _) => (Tok::Op(BinOp::Sub), 1),
            ('*', _) => (Tok::Op(BinOp::Mul), 1),
            ('/', _) => (Tok::Op(BinOp::Div), 1),
            ('%', _) => (Tok::Op(BinOp::Rem), 1),
            ('!', _) => (Tok::Bang, 1),
            ('=', _) => (Tok::Assign, 1),
            ('(', _) => (Tok::LParen, 1),
            (')', _) => (Tok::RParen, 1),
            ('{', _) => (Tok::LBrace, 1),
            ('}', _) => (Tok::RBrace, 1),
            (';', _) => (Tok::Semi, 1),
            _ => return Err(ProgramError::new(ErrorKind::UnexpectedChar(c), pos)),
        };
        out.push((tok, pos));
        i += width;
        col += width;
    }
    out.push((Tok::Eof, Pos { line, col }));
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Parser

struct Parser {
    toks: Vec<(Tok, Pos)>,
    i: usize,
    /// Current nesting of parentheses/unary operators (bounds the recursion of the parser itself).
    nesting: usize,
    blocks: usize,
}

impl Parser {
    fn peek(&self) -> &Tok {
        &self.toks[self.i].0
    }
    fn pos(&self) -> Pos {
        self.toks[self.i].1
    }
    fn bump(&mut self) -> (Tok, Pos) {
        let t = self.toks[self.i].clone();
        if self.i + 1 < self.toks.len() {
            self.i += 1;
        }
        t
    }
    fn err_expected(&self, expected: &str) -> ProgramError {
        ProgramError::new(
            ErrorKind::Syntax {
                expected: expected.to_string(),
                found: self.peek().to_string(),
            },
            self.pos(),
        )
    }
    fn expect(&mut self, tok: Tok) -> Result<Pos, ProgramError> {
        if *self.peek() == tok {
            Ok(self.bump().1)
        } else {
            Err(self.err_expected(&tok.to_string()))
        }
    }
    fn ident(&mut self) -> Result<String, ProgramError> {
        match self.peek().clone() {
            Tok::Ident(s) => {
                self.bump();
                Ok(s)
            }
            _ => Err(self.err_expected("a variable name")),
        }
    }

    fn program(&mut self) -> Result<Program, ProgramError> {
        let mut stmts = Vec::new();
        while *self.peek() != Tok::Eof {
            stmts.push(self.stmt()?);
        }
        Ok(Program { stmts })
    }

    fn block(&mut self) -> Result<Vec<Stmt>, ProgramError> {
        let open = self.expect(Tok::LBrace)?;
        self.blocks += 1;
        if self.blocks > MAX_BLOCK_DEPTH {
            return Err(ProgramError::new(ErrorKind::TooDeep, open));
        }
        let mut stmts = Vec::new();
        while !matches!(self.peek(), Tok::RBrace | Tok::Eof) {
            stmts.push(self.stmt()?);
        }
        if *self.peek() == Tok::Eof {
            return Err(self.err_expected("`}`"));
        }
        self.bump();
        self.blocks -= 1;
        Ok(stmts)
    }

    fn stmt(&mut self) -> Result<Stmt, ProgramError> {
        let pos = self.pos();
        let kind = match self.peek().clone() {
            Tok::Let => {
                self.bump();
                let name = self.ident()?;
                self.expect(Tok::Assign)?;
                let value = self.expr()?;
                self.expect(Tok::Semi)?;
                StmtKind::Let { name, value }
            }
            Tok::Ident(name) => {
                self.bump();
                self.expect(Tok::Assign)?;
                let value = self.expr()?;
                self.expect(Tok::Semi)?;
                StmtKind::Assign { name, value }
            }
            Tok::Print => {
                self.bump();
                let value = self.expr()?;
                self.expect(Tok::Semi)?;
                StmtKind::Print(value)
            }
            Tok::If => return self.if_stmt(),
            Tok::While => {
                self.bump();
                let cond = self.expr()?;
                let body = self.block()?;
                StmtKind::While { cond, body }
            }
            _ => return Err(self.err_expected("a statement")),
        };
        Ok(Stmt { kind, pos })
    }

    fn if_stmt(&mut self) -> Result<Stmt, ProgramError> {
        let pos = self.expect(Tok::If)?;
        let cond = self.expr()?;
        let then = self.block()?;
        let otherwise = if *self.peek() == Tok::Else {
            self.bump();
            if *self.peek() == Tok::If {
                // Count an else-if chain as nesting, like the block it stands for.
                self.blocks += 1;
                if self.blocks > MAX_BLOCK_DEPTH {
                    return Err(ProgramError::new(ErrorKind::TooDeep, self.pos()));
                }
                let s = self.if_stmt()?;
                self.blocks -= 1;
                vec![s]
            } else {
                self.block()?
            }
        } else {
            Vec::new()
        };
        Ok(Stmt {
            kind: StmtKind::If {
                cond,
                then,
                otherwise,
            },
            pos,
        })
    }

    /// An expression and its depth.
    fn expr(&mut self) -> Result<Expr, ProgramError> {
        self.binary_level(1).map(|(e, _)| e)
    }

    fn binary_level(&mut self, level: u8) -> Result<(Expr, usize), ProgramError> {
        if level > 5 {
            return self.unary();
        }
        let (mut lhs, mut depth) = self.binary_level(level + 1)?;
        let mut compared = false;
        loop {
            let op = match self.peek() {
                Tok::Op(op) if op.precedence() == level => *op,
                _ => break,
            };
            let pos = self.pos();
            if op.is_comparison() && compared {
                return Err(ProgramError::new(ErrorKind::ChainedComparison, pos));
            }
            compared = true;
            self.bump();
            let (rhs, d) = self.binary_level(level + 1)?;
            depth = depth.max(d) + 1;
            if depth > MAX_EXPR_DEPTH {
                return Err(ProgramError::new(ErrorKind::TooDeep, pos));
            }
            lhs = Expr {
                kind: ExprKind::Binary(op, Box::new(lhs), Box::new(rhs)),
                pos,
            };
        }
        Ok((lhs, depth))
    }

    fn unary(&mut self) -> Result<(Expr, usize), ProgramError> {
        let pos = self.pos();
        let op = match self.peek() {
            Tok::Op(BinOp::Sub) => Some(UnOp::Neg),
            Tok::Bang => Some(UnOp::Not),
            _ => None,
        };
        if let Some(op) = op {
            self.bump();
            let (e, d) = self.nested(|p| p.unary())?;
            if d + 1 > MAX_EXPR_DEPTH {
                return Err(ProgramError::new(ErrorKind::TooDeep, pos));
            }
            return Ok((
                Expr {
                    kind: ExprKind::Unary(op, Box::new(e)),
                    pos,
                },
                d + 1,
            ));
        }
        match self.peek().clone() {
            Tok::Int(v) => {
                self.bump();
                Ok((
                    Expr {
                        kind: ExprKind::Int(v),
                        pos,
                    },
                    1,
                ))
            }
            Tok::Ident(name) => {
                self.bump();
                Ok((
                    Expr {
                        kind: ExprKind::Var(name),
                        pos,
                    },
                    1,
                ))
            }
            Tok::LParen => {
                self.bump();
                let (e, d) = self.nested(|p| p.binary_level(1))?;
                self.expect(Tok::RParen)?;
                Ok((e, d))
            }
            _ => Err(self.err_expected("an expression")),
        }
    }

    /// Run `f` one nesting level deeper, refusing past [`MAX_EXPR_DEPTH`].
    fn nested<T>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<T, ProgramError>,
    ) -> Result<T, ProgramError> {
        self.nesting += 1;
        if self.nesting > MAX_EXPR_DEPTH {
            return Err(ProgramError::new(ErrorKind::TooDeep, self.pos()));
        }
        let r = f(self);
        self.nesting -= 1;
        r
    }
}

/// Parse source text into a [`Program`].
pub fn parse(src: &str) -> Result<Program, ProgramError> {
    let toks = lex(src)?;
    Parser {
        toks,
        i: 0,
        nesting: 0,
        blocks: 0,
    }
    .program()
}

// ---------------------------------------------------------------------------------------------
// Printer

fn needs_parens(child: &Expr, parent: BinOp, right: bool) -> bool {
    match &child.kind {
        ExprKind::Binary(op, _, _) => {
            let (c, p) = (op.precedence(), parent.precedence());
            c < p || (c == p && (right || parent.is_comparison()))
        }
        _ => false,
    }
}

fn write_expr(e: &Expr, out: &mut String) {
    match &e.kind {
        ExprKind::Int(v) => out.push_str(&v.to_string()),
        ExprKind::Var(name) => out.push_str(name),
        ExprKind::Unary(op, x) => {
            out.push_str(match op {
                UnOp::Neg => "-",
                UnOp::Not => "!",
            });
            let wrap = matches!(x.kind, ExprKind::Binary(..) | ExprKind::Unary(..))
                || matches!(x.kind, ExprKind::Int(v) if v < 0);
            if wrap {
                out.push('(');
            }
            write_expr(x, out);
            if wrap {
                out.push(')');
            }
        }
        ExprKind::Binary(op, l, r) => {
            for (side, right) in [(l, false), (r, true)] {
                if right {
                    out.push(' ');
                    out.push_str(op.symbol());
                    out.push(' ');
                }
                let wrap = needs_parens(side, *op, right);
                if wrap {
                    out.push('(');
                }
                write_expr(side, out);
                if wrap {
                    out.push(')');
                }
            }
        }
    }
}

fn write_block(stmts: &[Stmt], indent: usize, out: &mut String) {
    for s in stmts {
        write_stmt(s, indent, out);
    }
}

fn write_stmt(s: &Stmt, indent: usize, out: &mut String) {
    let pad = "    ".repeat(indent);
    out.push_str(&pad);
    match &s.kind {
        StmtKind::Let { name, value } => {
            out.push_str(&format!("let {name} = "));
            write_expr(value, out);
            out.push_str(";\n");
        }
        StmtKind::Assign { name, value } => {
            out.push_str(&format!("{name} = "));
            write_expr(value, out);
            out.push_str(";\n");
        }
        StmtKind::Print(value) => {
            out.push_str("print ");
            write_expr(value, out);
            out.push_str(";\n");
        }
        StmtKind::While { cond, body } => {
            out.push_str("while ");
            write_expr(cond, out);
            out.push_str(" {\n");
            write_block(body, indent + 1, out);
            out.push_str(&pad);
            out.push_str("}\n");
        }
        StmtKind::If { .. } => {
            let mut cur = s;
            loop {
                let StmtKind::If {
                    cond,
                    then,
                    otherwise,
                } = &cur.kind
                else {
                    unreachable!()
                };
                out.push_str("if ");
                write_expr(cond, out);
                out.push_str(" {\n");
                write_block(then, indent + 1, out);
                out.push_str(&pad);
                out.push('}');
                match otherwise.as_slice() {
                    [] => break,
                    [next @ Stmt {
                        kind: StmtKind::If { .. },
                        ..
                    }] => {
                        out.push_str(" else ");
                        cur = next;
                    }
                    _ => {
                        out.push_str(" else {\n");
                        write_block(otherwise, indent + 1, out);
                        out.push_str(&pad);
                        out.push('}');
                        break;
                    }
                }
            }
            out.push('\n');
        }
    }
}

/// Source text, one statement per line, blocks indented by four spaces. Parsing it gives back an
/// equivalent program (parentheses are inserted where precedence needs them).
impl fmt::Display for Program {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::new();
        write_block(&self.stmts, 0, &mut out);
        f.write_str(&out)
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::new();
        write_expr(self, &mut out);
        f.write_str(&out)
    }
}

// ---------------------------------------------------------------------------------------------
// Interpreter

/// Bounds on a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Statements executed plus loop tests.
    pub max_steps: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_steps: 10_000 }
    }
}

/// The result of a successful run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Execution {
    /// One printed value per line, joined with `\n`, no trailing line break.
    pub output: String,
    /// The printed values in order.
    pub values: Vec<i64>,
    pub steps: u64,
    /// Steps per source line (1-based; built programs count under line 0): how often each line ran.
    /// A statement counts once per execution, a `while` line once more per loop test after the
    /// first, so a `while` line counts its condition's evaluations. Lines never reached are absent.
    pub line_counts: BTreeMap<usize, u64>,
}

struct Machine {
    scopes: Vec<HashMap<String, i64>>,
    values: Vec<i64>,
    steps: u64,
    max_steps: u64,
    line_counts: BTreeMap<usize, u64>,
}

impl Machine {
    fn step(&mut self, pos: Pos) -> Result<(), ProgramError> {
        self.steps += 1;
        *self.line_counts.entry(pos.line).or_insert(0) += 1;
        if self.steps > self.max_steps {
            return Err(ProgramError::new(ErrorKind::StepLimit(self.max_steps), pos));
        }
        Ok(())
    }

    fn lookup(&mut self, name: &str) -> Option<&mut i64> {
        self.scopes.iter_mut().rev().find_map(|s| s.get_mut(name))
    }

    fn block(&mut self, stmts: &[Stmt]) -> Result<(), ProgramError> {
        self.scopes.push(HashMap::new());
        let r = stmts.iter().try_for_each(|s| self.stmt(s));
        self.scopes.pop();
        r
    }

    fn stmt(&mut self, s: &Stmt) -> Result<(), ProgramError> {
        self.step(s.pos)?;
        match &s.kind {
            StmtKind::Let { name, value } => {
                let v = self.eval(value)?;
                self.scopes
                    .last_mut()
                    .expect("the global scope is never popped")
                    .insert(name.clone(), v);
            }
            StmtKind::Assign { name, value } => {
                let v = self.eval(value)?;
                match self.lookup(name) {
                    Some(slot) => *slot = v,
                    None => {
                        return Err(ProgramError::new(
                            ErrorKind::UndefinedVariable(name.clone()),
                            s.pos,
                        ))
                    }
                }
            }
            StmtKind::Print(value) => {
                let v = self.eval(value)?;
                self.values.push(v);
            }
            StmtKind::If {
                cond,
                then,
                otherwise,
            } => {
                if self.eval(cond)? != 0 {
                    self.block(then)?;
                } else {
                    self.block(otherwise)?;
                }
            }
            StmtKind::While { cond, body } => loop {
                if self.eval(cond)? == 0 {
                    break;
                }
                self.block(body)?;
                self.step(s.pos)?;
            },
        }
        Ok(())
    }

    fn eval(&mut self, e: &Expr) -> Result<i64, ProgramError> {
        let err = |k| ProgramError::new(k, e.pos);
        match &e.kind {
            ExprKind::Int(v) => Ok(*v),
            ExprKind::Var(name) => match self.lookup(name) {
                Some(v) => Ok(*v),
                None => Err(err(ErrorKind::UndefinedVariable(name.clone()))),
            },
            ExprKind::Unary(op, x) => {
                let v = self.eval(x)?;
                match op {
                    UnOp::Neg => v.checked_neg().ok_or_else(|| err(ErrorKind::Overflow)),
                    UnOp::Not => Ok((v == 0) as i64),
                }
            }
            ExprKind::Binary(op, l, r) => {
                let a = self.eval(l)?;
                // Short-circuit logic.
                match op {
                    BinOp::And if a == 0 => return Ok(0),
                    BinOp::Or if a != 0 => return Ok(1),
                    _ => {}
                }
                let b = self.eval(r)?;
                let checked = |v: Option<i64>| v.ok_or_else(|| err(ErrorKind::Overflow));
                match op {
                    BinOp::Add => checked(a.checked_add(b)),
                    BinOp::Sub => checked(a.checked_sub(b)),
                    BinOp::Mul => checked(a.checked_mul(b)),
                    BinOp::Div | BinOp::Rem if b == 0 => Err(err(ErrorKind::DivisionByZero)),
                    BinOp::Div => checked(a.checked_div(b)),
                    BinOp::Rem => checked(a.checked_rem(b)),
                    BinOp::Eq => Ok((a == b) as i64),
                    BinOp::Ne => Ok((a != b) as i64),
                    BinOp::Lt => Ok((a < b) as i64),
                    BinOp::Le => Ok((a <= b) as i64),
                    BinOp::Gt => Ok((a > b) as i64),
                    BinOp::Ge => Ok((a >= b) as i64),
                    BinOp::And | BinOp::Or => Ok((b != 0) as i64),
                }
            }
        }
    }
}

impl Program {
    /// Run with the given limits.
    pub fn execute(&self, limits: &Limits) -> Result<Execution, ProgramError> {
        let mut m = Machine {
            scopes: vec![HashMap::new()],
            values: Vec::new(),
            steps: 0,
            max_steps: limits.max_steps,
            line_counts: BTreeMap::new(),
        };
        for s in &self.stmts {
            m.stmt(s)?;
        }
        let output = m
            .values
            .iter()
            .map(|v| v.to_string())
            .collect::<Vec<_>>()
            .join("\n");
        Ok(Execution {
            output,
            values: m.values,
            steps: m.steps,
            line_counts: m.line_counts,
        })
    }
}

/// Parse and run `src` with the default [`Limits`]; the printed values, one per line, joined with
/// `\n` (no trailing line break).
pub fn run(src: &str) -> Result<String, ProgramError> {
    run_with(src, &Limits::default()).map(|e| e.output)
}

/// Parse and run `src` with explicit limits.
pub fn run_with(src: &str, limits: &Limits) -> Result<Execution, ProgramError> {
    parse(src)?.execute(limits)
}
