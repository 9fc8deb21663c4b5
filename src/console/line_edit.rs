//! One line of typed text with readline habits, for the palette, the filter and typed
//! confirmations: a cursor (←/→, Home/End, Ctrl-A/Ctrl-E), Ctrl-U/Ctrl-K/Ctrl-W to
//! delete, ↑/↓ through the history of submitted lines, and Tab completion of the word
//! before the cursor from candidates the caller gives.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

/// How many submitted lines the history keeps.
const HISTORY: usize = 50;

/// A line being typed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LineEdit {
    text: String,
    /// Cursor, in characters from the start.
    cursor: usize,
    history: Vec<String>,
    /// Position in the history while ↑/↓ browse it.
    browsing: Option<usize>,
}

/// What a key did to the line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Edited {
    /// The text or the cursor changed (or nothing happened).
    Changed,
    /// Enter: the line is done.
    Submit,
    /// Esc.
    Cancel,
    /// Tab found several candidates: these (the line took their common prefix).
    Candidates(Vec<String>),
}

impl LineEdit {
    /// A line holding `text`, the cursor at its end.
    pub fn with_text(text: &str) -> LineEdit {
        LineEdit { text: text.to_string(), cursor: text.chars().count(), ..LineEdit::default() }
    }

    /// The text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The cursor, in characters.
    pub fn cursor(&self) -> usize {
        self.cursor
    }

    /// Empties the line (the history stays).
    pub fn clear(&mut self) {
        self.text.clear();
        self.cursor = 0;
        self.browsing = None;
    }

    /// Keeps the current text in the history (not twice in a row) and empties the line.
    pub fn submit(&mut self) -> String {
        let line = std::mem::take(&mut self.text);
        if !line.trim().is_empty() && self.history.last() != Some(&line) {
            self.history.push(line.clone());
            if self.history.len() > HISTORY {
                self.history.remove(0);
            }
        }
        self.clear();
        line
    }

    fn byte(&self, chars: usize) -> usize {
        self.text.char_indices().nth(chars).map_or(self.text.len(), |(i, _)| i)
    }

    /// Replaces the text, the cursor at its end.
    pub fn set_text(&mut self, text: &str) {
        self.browsing = None;
        self.set(text.to_string());
    }

    fn set(&mut self, text: String) {
        self.cursor = text.chars().count();
        self.text = text;
    }

    /// Start of the word before the cursor (for Ctrl-W and completion), in characters.
    fn word_start(&self) -> usize {
        let chars: Vec<char> = self.text.chars().take(self.cursor).collect();
        let mut i = chars.len();
        while i > 0 && chars[i - 1] == ' ' {
            i -= 1;
        }
        while i > 0 && chars[i - 1] != ' ' {
            i -= 1;
        }
        i
    }

    /// Handles a key. `complete(words_before, word)` lists the candidates for the word
    /// before the cursor, given the words before it.
    pub fn on_key(&mut self, key: KeyEvent, complete: impl Fn(&[&str], &str) -> Vec<String>) -> Edited {
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        match key.code {
            KeyCode::Enter => return Edited::Submit,
            KeyCode::Esc => return Edited::Cancel,
            KeyCode::Char('a') if ctrl => self.cursor = 0,
            KeyCode::Char('e') if ctrl => self.cursor = self.text.chars().count(),
            KeyCode::Char('u') if ctrl => {
                let at = self.byte(self.cursor);
                self.text.replace_range(..at, "");
                self.cursor = 0;
            }
            KeyCode::Char('k') if ctrl => {
                let at = self.byte(self.cursor);
                self.text.truncate(at);
            }
            KeyCode::Char('w') if ctrl => {
                let start = self.word_start();
                let (from, to) = (self.byte(start), self.byte(self.cursor));
                self.text.replace_range(from..to, "");
                self.cursor = start;
            }
            KeyCode::Char('b') if ctrl => self.cursor = self.cursor.saturating_sub(1),
            KeyCode::Char('f') if ctrl => self.cursor = (self.cursor + 1).min(self.text.chars().count()),
            // Other control chords are not text.
            KeyCode::Char(_) if ctrl => {}
            KeyCode::Char(c) => {
                let at = self.byte(self.cursor);
                self.text.insert(at, c);
                self.cursor += 1;
            }
            KeyCode::Backspace if self.cursor > 0 => {
                let at = self.byte(self.cursor - 1);
                self.text.remove(at);
                self.cursor -= 1;
            }
            KeyCode::Delete if self.cursor < self.text.chars().count() => {
                let at = self.byte(self.cursor);
                self.text.remove(at);
            }
            KeyCode::Left => self.cursor = self.cursor.saturating_sub(1),
            KeyCode::Right => self.cursor = (self.cursor + 1).min(self.text.chars().count()),
            KeyCode::Home => self.cursor = 0,
            KeyCode::End => self.cursor = self.text.chars().count(),
            KeyCode::Up if !self.history.is_empty() => {
                let i = self.browsing.map_or(self.history.len() - 1, |i| i.saturating_sub(1));
                self.browsing = Some(i);
                self.set(self.history[i].clone());
            }
            KeyCode::Down => match self.browsing {
                Some(i) if i + 1 < self.history.len() => {
                    self.browsing = Some(i + 1);
                    self.set(self.history[i + 1].clone());
                }
                Some(_) => {
                    self.browsing = None;
                    self.set(String::new());
                }
                None => {}
            },
            KeyCode::Tab => return self.complete(complete),
            _ => {}
        }
        Edited::Changed
    }

    fn complete(&mut self, complete: impl Fn(&[&str], &str) -> Vec<String>) -> Edited {
        let start = self.word_start();
        let (from, to) = (self.byte(start), self.byte(self.cursor));
        let word = self.text[from..to].to_string();
        let before: Vec<&str> = self.text[..from].split_whitespace().collect();
        let mut found: Vec<String> = complete(&before, &word).into_iter().filter(|c| c.starts_with(&word)).collect();
        found.sort();
        found.dedup();
        let Some(first) = found.first() else { return Edited::Changed };
        let common: String = if found.len() == 1 {
            format!("{first} ")
        } else {
            let mut p = first.clone();
            for c in &found[1..] {
                while !c.starts_with(&p) {
                    p.pop();
                }
            }
            p
        };
        self.text.replace_range(from..to, &common);
        self.cursor = start + common.chars().count();
        if found.len() > 1 { Edited::Candidates(found) } else { Edited::Changed }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }

    fn ctrl(c: char) -> KeyEvent {
        KeyEvent::new(KeyCode::Char(c), KeyModifiers::CONTROL)
    }

    fn none(_: &[&str], _: &str) -> Vec<String> {
        Vec::new()
    }

    fn typed(l: &mut LineEdit, s: &str) {
        for c in s.chars() {
            l.on_key(k(KeyCode::Char(c)), none);
        }
    }

    #[test]
    fn ctrl_keys_edit_instead_of_inserting_letters() {
        let mut l = LineEdit::default();
        typed(&mut l, "pause shop");
        l.on_key(ctrl('w'), none);
        assert_eq!(l.text(), "pause ");
        typed(&mut l, "crm");
        l.on_key(k(KeyCode::Left), none);
        l.on_key(k(KeyCode::Left), none);
        typed(&mut l, "X");
        assert_eq!(l.text(), "pause cXrm");
        assert_eq!(l.cursor(), 8);
        l.on_key(ctrl('a'), none);
        l.on_key(k(KeyCode::Delete), none);
        assert_eq!(l.text(), "ause cXrm");
        l.on_key(ctrl('e'), none);
        l.on_key(ctrl('u'), none);
        assert_eq!((l.text(), l.cursor()), ("", 0));
    }

    #[test]
    fn history_and_completion() {
        let mut l = LineEdit::default();
        typed(&mut l, "pause shop");
        assert_eq!(l.submit(), "pause shop");
        typed(&mut l, "audit");
        l.submit();
        l.on_key(k(KeyCode::Up), none);
        assert_eq!(l.text(), "audit");
        l.on_key(k(KeyCode::Up), none);
        assert_eq!(l.text(), "pause shop");
        l.on_key(k(KeyCode::Down), none);
        l.on_key(k(KeyCode::Down), none);
        assert_eq!(l.text(), "");
        let cands = |before: &[&str], _: &str| -> Vec<String> {
            if before.is_empty() { vec!["pause".into(), "palette".into()] } else { vec!["shop".into(), "crm".into()] }
        };
        typed(&mut l, "pa");
        assert_eq!(l.on_key(k(KeyCode::Tab), cands), Edited::Candidates(vec!["palette".into(), "pause".into()]));
        typed(&mut l, "u");
        l.on_key(k(KeyCode::Tab), cands);
        assert_eq!(l.text(), "pause ");
        typed(&mut l, "s");
        l.on_key(k(KeyCode::Tab), cands);
        assert_eq!(l.text(), "pause shop ");
    }
}
