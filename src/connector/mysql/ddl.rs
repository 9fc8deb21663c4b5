//! Schema changes in the binlog: which statements ferry carries to a MySQL target
//! (ALTER/CREATE/DROP/TRUNCATE TABLE, CREATE/DROP INDEX), where the table name sits in
//! the text so the target can get its own name, and which it refuses (renames, which
//! would leave the target writing to a table the task no longer names).

use crate::model::{SchemaChange, SchemaChangeKind, TableName};

/// What a statement means for replication.
#[derive(Debug, PartialEq, Eq)]
pub enum Ddl {
    /// Table changes ferry can apply on the target, one per table.
    Carry(Vec<SchemaChange>),
    /// A statement that touches these tables in a way ferry cannot carry.
    Refuse { tables: Vec<TableName>, why: &'static str },
    /// Not a table schema change (or a temporary table): nothing to carry.
    Other,
}

/// Classifies a statement run with `default_db` as the current database.
pub fn parse(sql: &str, default_db: &str) -> Ddl {
    let mut t = Tokens { text: sql, at: 0 };
    let Some(first) = t.word() else { return Ddl::Other };
    match first.as_str() {
        "ALTER" => {
            t.skip_words(&["ONLINE", "IGNORE"]);
            if !t.keyword("TABLE") {
                return Ddl::Other;
            }
            t.skip_phrase(&["IF", "EXISTS"]);
            let Some((name, range)) = t.name(default_db) else { return Ddl::Other };
            if renames_table(&sql[t.at..]) {
                return Ddl::Refuse { tables: vec![name], why: "it renames the table" };
            }
            carry(sql, name, range, SchemaChangeKind::Alter)
        }
        "CREATE" => {
            t.skip_phrase(&["OR", "REPLACE"]);
            if t.keyword("TEMPORARY") {
                return Ddl::Other;
            }
            t.skip_words(&["UNIQUE", "FULLTEXT", "SPATIAL"]);
            if t.keyword("INDEX") {
                return index_on(sql, t, default_db);
            }
            if !t.keyword("TABLE") {
                return Ddl::Other;
            }
            t.skip_phrase(&["IF", "NOT", "EXISTS"]);
            let Some((name, range)) = t.name(default_db) else { return Ddl::Other };
            carry(sql, name, range, SchemaChangeKind::Create)
        }
        "DROP" => {
            if t.keyword("TEMPORARY") {
                return Ddl::Other;
            }
            if t.keyword("INDEX") {
                return index_on(sql, t, default_db);
            }
            if !t.keyword("TABLE") {
                return Ddl::Other;
            }
            t.skip_phrase(&["IF", "EXISTS"]);
            let mut out = Vec::new();
            while let Some((name, _)) = t.name(default_db) {
                let prefix = "DROP TABLE IF EXISTS ";
                let statement = format!("{prefix}{}", name);
                let at = (prefix.len(), statement.len());
                out.push(SchemaChange { table: name, kind: SchemaChangeKind::Drop, statement, name_at: at });
                if !t.punct(',') {
                    break;
                }
            }
            if out.is_empty() { Ddl::Other } else { Ddl::Carry(out) }
        }
        "TRUNCATE" => {
            t.keyword("TABLE");
            let Some((name, range)) = t.name(default_db) else { return Ddl::Other };
            carry(sql, name, range, SchemaChangeKind::Truncate)
        }
        "RENAME" => {
            if !t.keyword("TABLE") {
                return Ddl::Other;
            }
            let mut tables = Vec::new();
            while let Some((from, _)) = t.name(default_db) {
                tables.push(from);
                if !t.keyword("TO") {
                    break;
                }
                if let Some((to, _)) = t.name(default_db) {
                    tables.push(to);
                }
                if !t.punct(',') {
                    break;
                }
            }
            Ddl::Refuse { tables, why: "it renames tables" }
        }
        _ => Ddl::Other,
    }
}

fn carry(sql: &str, table: TableName, name_at: (usize, usize), kind: SchemaChangeKind) -> Ddl {
    Ddl::Carry(vec![SchemaChange { table, kind, statement: sql.to_string(), name_at }])
}

/// `CREATE … INDEX name ON table …` and `DROP INDEX name ON table`.
fn index_on(sql: &str, mut t: Tokens<'_>, default_db: &str) -> Ddl {
    t.skip_phrase(&["IF", "NOT", "EXISTS"]);
    t.skip_phrase(&["IF", "EXISTS"]);
    if t.ident().is_none() || !t.keyword("ON") {
        return Ddl::Other;
    }
    match t.name(default_db) {
        Some((name, range)) => carry(sql, name, range, SchemaChangeKind::Index),
        None => Ddl::Other,
    }
}

/// True when an ALTER TABLE's clauses rename the table itself (`RENAME [TO|AS] x`), as
/// opposed to `RENAME COLUMN`, `RENAME INDEX` or `RENAME KEY`.
fn renames_table(rest: &str) -> bool {
    let mut t = Tokens { text: rest, at: 0 };
    while let Some(tok) = t.any() {
        if tok.eq_ignore_ascii_case("RENAME") {
            let next = t.peek_word();
            if !matches!(next.as_deref(), Some("COLUMN" | "INDEX" | "KEY" | "CONSTRAINT")) {
                return true;
            }
        }
    }
    false
}

/// A cursor over SQL text: words, identifiers and punctuation, skipping whitespace,
/// comments and string literals.
struct Tokens<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Tokens<'a> {
    fn skip_space(&mut self) {
        let b = self.text.as_bytes();
        loop {
            while self.at < b.len() && b[self.at].is_ascii_whitespace() {
                self.at += 1;
            }
            let rest = &self.text[self.at..];
            if rest.starts_with("/*") {
                self.at += rest.find("*/").map_or(rest.len(), |i| i + 2);
            } else if rest.starts_with("-- ") || rest.starts_with('#') {
                self.at += rest.find('\n').map_or(rest.len(), |i| i + 1);
            } else {
                return;
            }
        }
    }

    /// The next bare word, upper-cased, if the next token is one.
    fn word(&mut self) -> Option<String> {
        self.skip_space();
        let rest = &self.text[self.at..];
        let len = rest.bytes().take_while(|c| c.is_ascii_alphanumeric() || *c == b'_').count();
        if len == 0 {
            return None;
        }
        self.at += len;
        Some(rest[..len].to_ascii_uppercase())
    }

    fn peek_word(&mut self) -> Option<String> {
        let at = self.at;
        let w = self.word();
        self.at = at;
        w
    }

    /// Consumes `kw` if it is the next word.
    fn keyword(&mut self, kw: &str) -> bool {
        let at = self.at;
        if self.word().as_deref() == Some(kw) {
            return true;
        }
        self.at = at;
        false
    }

    fn skip_words(&mut self, words: &[&str]) {
        while words.iter().any(|w| self.keyword(w)) {}
    }

    /// Consumes the words of `phrase` only when all of them follow.
    fn skip_phrase(&mut self, phrase: &[&str]) {
        let at = self.at;
        if !phrase.iter().all(|w| self.keyword(w)) {
            self.at = at;
        }
    }

    fn punct(&mut self, c: char) -> bool {
        self.skip_space();
        if self.text[self.at..].starts_with(c) {
            self.at += c.len_utf8();
            return true;
        }
        false
    }

    /// One identifier, bare or back-quoted, unquoted.
    fn ident(&mut self) -> Option<String> {
        self.skip_space();
        let rest = &self.text[self.at..];
        if let Some(body) = rest.strip_prefix('`') {
            let mut out = String::new();
            let mut chars = body.char_indices();
            while let Some((i, c)) = chars.next() {
                if c == '`' {
                    if body[i + 1..].starts_with('`') {
                        out.push('`');
                        chars.next();
                    } else {
                        self.at += i + 2;
                        return Some(out);
                    }
                } else {
                    out.push(c);
                }
            }
            return None;
        }
        let len: usize =
            rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_' || *c == '$').map(char::len_utf8).sum();
        if len == 0 {
            return None;
        }
        self.at += len;
        Some(rest[..len].to_string())
    }

    /// A table name, `db.t` or `t` (in `default_db`), with its byte range in the text.
    fn name(&mut self, default_db: &str) -> Option<(TableName, (usize, usize))> {
        self.skip_space();
        let start = self.at;
        let first = self.ident()?;
        let save = self.at;
        if self.text[self.at..].starts_with('.') {
            self.at += 1;
            if let Some(second) = self.ident() {
                return Some((TableName { schema: Some(first), name: second }, (start, self.at)));
            }
            self.at = save;
        }
        Some((TableName { schema: Some(default_db.to_string()), name: first }, (start, self.at)))
    }

    /// Any next token (word, identifier, string or one character), for scanning.
    fn any(&mut self) -> Option<&'a str> {
        self.skip_space();
        let rest = &self.text[self.at..];
        let first = rest.chars().next()?;
        let len = match first {
            '\'' | '"' | '`' => rest[1..].find(first).map_or(rest.len(), |i| i + 2),
            c if c.is_alphanumeric() || c == '_' => {
                rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').map(char::len_utf8).sum()
            }
            c => c.len_utf8(),
        };
        self.at += len;
        Some(&rest[..len])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(db: &str, t: &str) -> TableName {
        TableName { schema: Some(db.into()), name: t.into() }
    }

    fn one(sql: &str) -> SchemaChange {
        match parse(sql, "shop") {
            Ddl::Carry(mut v) if v.len() == 1 => v.remove(0),
            other => panic!("{sql}: {other:?}"),
        }
    }

    #[test]
    fn finds_and_retargets_the_table_name() {
        let c = one("ALTER TABLE `orders` ADD COLUMN note VARCHAR(20) DEFAULT 'x'");
        assert_eq!((c.table.clone(), c.kind), (name("shop", "orders"), SchemaChangeKind::Alter));
        assert_eq!(c.retarget("`v2`.`orders2`"), "ALTER TABLE `v2`.`orders2` ADD COLUMN note VARCHAR(20) DEFAULT 'x'");
        let c = one("/* c */ create table if not exists other.t1 (id int primary key)");
        assert_eq!((c.table.clone(), c.kind), (name("other", "t1"), SchemaChangeKind::Create));
        assert_eq!(c.retarget("`x`.`y`"), "/* c */ create table if not exists `x`.`y` (id int primary key)");
        assert_eq!(one("TRUNCATE t").kind, SchemaChangeKind::Truncate);
        let c = one("CREATE UNIQUE INDEX ix ON shop.t (a)");
        assert_eq!((c.table, c.kind), (name("shop", "t"), SchemaChangeKind::Index));
        assert_eq!(one("DROP INDEX ix ON `t`").kind, SchemaChangeKind::Index);
        assert_eq!(one("ALTER TABLE t RENAME COLUMN a TO b").kind, SchemaChangeKind::Alter);
    }

    #[test]
    fn splits_multi_table_drops() {
        let Ddl::Carry(v) = parse("DROP TABLE IF EXISTS `a`, shop2.b /* generated by server */", "shop") else {
            panic!("drop")
        };
        let tables: Vec<TableName> = v.iter().map(|c| c.table.clone()).collect();
        assert_eq!(tables, vec![name("shop", "a"), name("shop2", "b")]);
        assert_eq!(v[1].retarget("`t`.`b`"), "DROP TABLE IF EXISTS `t`.`b`");
    }

    #[test]
    fn refuses_renames_and_ignores_the_rest() {
        assert!(matches!(parse("RENAME TABLE a TO b", "shop"), Ddl::Refuse { .. }));
        assert!(matches!(parse("ALTER TABLE a RENAME TO b", "shop"), Ddl::Refuse { .. }));
        assert!(matches!(parse("alter table a add x int, rename as b", "shop"), Ddl::Refuse { .. }));
        assert_eq!(parse("CREATE TEMPORARY TABLE x (a int)", "shop"), Ddl::Other);
        assert_eq!(parse("GRANT SELECT ON shop.a TO u", "shop"), Ddl::Other);
        assert_eq!(
            parse("ALTER TABLE t COMMENT 'RENAME TO x'", "shop"),
            one_alter("ALTER TABLE t COMMENT 'RENAME TO x'")
        );
    }

    fn one_alter(sql: &str) -> Ddl {
        Ddl::Carry(vec![one(sql)])
    }
}
