//! Colour themes: built-in ones from themes/*.toml (embedded, so the binary works
//! anywhere) and user themes in the config folder, each a partial override of a base.
//! Widgets ask for meaning (`theme.lag(s)`, `theme.border(focused)`), never a colour.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use ratatui::style::{Color, Modifier, Style};
use serde::Deserialize;

use crate::engine::metrics::DirectionState;

/// Lag at or above this many seconds is a warning (cutover's default max_lag_seconds).
pub const LAG_WARN_SECONDS: f64 = 5.0;
/// Lag at or above this many seconds is an error.
pub const LAG_ERROR_SECONDS: f64 = 30.0;

/// The built-in themes: (name, file text).
pub const BUILTIN: &[(&str, &str)] = &[
    ("dark", include_str!("../../themes/dark.toml")),
    ("light", include_str!("../../themes/light.toml")),
    ("high-contrast", include_str!("../../themes/high-contrast.toml")),
];

/// Why a theme cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ThemeError {
    /// No built-in or user theme has that name.
    #[error("theme {name:?} not found\n  fix: use one of {known}, or put {name}.toml in {}", dir.display())]
    NotFound {
        /// The name asked for.
        name: String,
        /// The built-in names.
        known: String,
        /// Where user themes go.
        dir: PathBuf,
    },
    /// A theme file cannot be read.
    #[error("theme file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A theme file is malformed.
    #[error("theme file {path}: {message}\n  fix: colours are names (red, lightblue) or #rrggbb; see themes/dark.toml")]
    Parse {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ThemeFile {
    name: Option<String>,
    base: Option<String>,
    #[serde(default)]
    colors: ColorsFile,
}

macro_rules! colors {
    ($($field:ident),* $(,)?) => {
        #[derive(Debug, Default, Deserialize)]
        #[serde(deny_unknown_fields)]
        struct ColorsFile { $($field: Option<String>,)* }

        /// The colours of a theme, by meaning.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub struct Colors { $(
            #[doc = concat!("Colour of ", stringify!($field), ".")]
            pub $field: Color,
        )* }

        impl Colors {
            fn overlay(mut self, file: &ColorsFile, path: &str) -> Result<Colors, ThemeError> {
                $(if let Some(text) = &file.$field {
                    self.$field = Color::from_str(text).map_err(|_| ThemeError::Parse {
                        path: path.to_string(),
                        message: format!("{} = {text:?} is not a colour", stringify!($field)),
                    })?;
                })*
                Ok(self)
            }

            /// Every colour passed through `f` (to fit the terminal's colour depth).
            pub fn map(self, f: impl Fn(Color) -> Color) -> Colors {
                Colors { $($field: f(self.$field),)* }
            }
        }
    };
}

colors!(
    text,
    muted,
    background,
    border,
    border_focused,
    title,
    header,
    selected_fg,
    selected_bg,
    ok,
    warn,
    error,
    stale,
    accent,
    chart_lag,
    chart_rate,
);

/// A resolved theme.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Theme {
    /// Its name.
    pub name: String,
    /// Its colours.
    pub colors: Colors,
}

const BLANK: Colors = Colors {
    text: Color::Reset,
    muted: Color::Reset,
    background: Color::Reset,
    border: Color::Reset,
    border_focused: Color::Reset,
    title: Color::Reset,
    header: Color::Reset,
    selected_fg: Color::Reset,
    selected_bg: Color::Reset,
    ok: Color::Reset,
    warn: Color::Reset,
    error: Color::Reset,
    stale: Color::Reset,
    accent: Color::Reset,
    chart_lag: Color::Reset,
    chart_rate: Color::Reset,
};

fn parse(text: &str, path: &str) -> Result<ThemeFile, ThemeError> {
    toml::from_str(text).map_err(|e| ThemeError::Parse { path: path.to_string(), message: e.to_string() })
}

impl Theme {
    /// A built-in theme by name.
    pub fn builtin(name: &str) -> Option<Theme> {
        let (n, text) = BUILTIN.iter().find(|(n, _)| *n == name)?;
        let file = parse(text, &format!("themes/{n}.toml")).ok()?;
        let colors = BLANK.overlay(&file.colors, n).ok()?;
        Some(Theme { name: n.to_string(), colors })
    }

    /// The default theme (dark).
    pub fn default_theme() -> Theme {
        Theme::builtin("dark").unwrap_or(Theme { name: "dark".into(), colors: BLANK })
    }

    /// A theme by name: a user theme in `user_dir` (a partial override of its `base`)
    /// wins over a built-in one of the same name.
    pub fn load(name: &str, user_dir: Option<&Path>) -> Result<Theme, ThemeError> {
        if let Some(dir) = user_dir {
            let path = dir.join(format!("{name}.toml"));
            if path.exists() {
                let text =
                    std::fs::read_to_string(&path).map_err(|source| ThemeError::Read { path: path.clone(), source })?;
                let shown = path.display().to_string();
                let file = parse(&text, &shown)?;
                let base_name = file.base.clone().unwrap_or_else(|| "dark".into());
                let base = if base_name == name { None } else { Theme::builtin(&base_name) };
                let base = base.ok_or_else(|| ThemeError::Parse {
                    path: shown.clone(),
                    message: format!("base = {base_name:?} is not a built-in theme"),
                })?;
                let colors = base.colors.overlay(&file.colors, &shown)?;
                return Ok(Theme { name: file.name.unwrap_or_else(|| name.to_string()), colors });
            }
        }
        Theme::builtin(name).ok_or_else(|| ThemeError::NotFound {
            name: name.to_string(),
            known: BUILTIN.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", "),
            dir: user_dir.map(Path::to_path_buf).unwrap_or_default(),
        })
    }

    /// The theme in the colours the terminal can show: `#rrggbb` becomes the nearest
    /// of the 256 or 16 colours when the terminal has no true colour.
    pub fn for_depth(self, depth: super::color_depth::ColorDepth) -> Theme {
        Theme { name: self.name, colors: self.colors.map(|c| depth.fit(c)) }
    }

    /// Plain text.
    pub fn text(&self) -> Style {
        Style::new().fg(self.colors.text).bg(self.colors.background)
    }

    /// Secondary text: hints, units, timestamps.
    pub fn muted(&self) -> Style {
        Style::new().fg(self.colors.muted)
    }

    /// A block's border.
    pub fn border(&self, focused: bool) -> Style {
        Style::new().fg(if focused { self.colors.border_focused } else { self.colors.border })
    }

    /// A block's title.
    pub fn title(&self) -> Style {
        Style::new().fg(self.colors.title).add_modifier(Modifier::BOLD)
    }

    /// Table headers.
    pub fn header(&self) -> Style {
        Style::new().fg(self.colors.header).add_modifier(Modifier::BOLD)
    }

    /// The selected row.
    pub fn selected(&self) -> Style {
        Style::new().fg(self.colors.selected_fg).bg(self.colors.selected_bg).add_modifier(Modifier::BOLD)
    }

    /// Something fine.
    pub fn ok(&self) -> Style {
        Style::new().fg(self.colors.ok)
    }

    /// Something to watch.
    pub fn warn(&self) -> Style {
        Style::new().fg(self.colors.warn)
    }

    /// Something wrong.
    pub fn error(&self) -> Style {
        Style::new().fg(self.colors.error).add_modifier(Modifier::BOLD)
    }

    /// A node that stopped answering.
    pub fn stale(&self) -> Style {
        Style::new().fg(self.colors.stale).add_modifier(Modifier::ITALIC)
    }

    /// Keys in hints, the active tab.
    pub fn accent(&self) -> Style {
        Style::new().fg(self.colors.accent).add_modifier(Modifier::BOLD)
    }

    /// A lag value: fine, warning or error by its size; muted when unknown.
    pub fn lag(&self, seconds: Option<f64>) -> Style {
        match seconds {
            None => self.muted(),
            Some(s) if s >= LAG_ERROR_SECONDS => self.error(),
            Some(s) if s >= LAG_WARN_SECONDS => self.warn(),
            Some(_) => self.ok(),
        }
    }

    /// A direction's state.
    pub fn state(&self, state: &DirectionState, paused: bool) -> Style {
        if paused {
            return self.warn();
        }
        match state {
            DirectionState::Streaming | DirectionState::Snapshotting(_) => self.ok(),
            DirectionState::Starting | DirectionState::Stopped => self.muted(),
            DirectionState::WaitingForLease
            | DirectionState::Retrying
            | DirectionState::ClockSkew
            | DirectionState::TransportFull => self.warn(),
            DirectionState::Failed => self.error(),
        }
    }

    /// The lag chart's line.
    pub fn chart_lag(&self) -> Style {
        Style::new().fg(self.colors.chart_lag)
    }

    /// The throughput chart's line and sparklines.
    pub fn chart_rate(&self) -> Style {
        Style::new().fg(self.colors.chart_rate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_theme_parses_with_every_colour() {
        for (name, text) in BUILTIN {
            let file = parse(text, name).expect("theme parses");
            let c = file.colors;
            assert!(c.text.is_some() && c.chart_rate.is_some() && c.selected_bg.is_some(), "{name} is incomplete");
            assert!(Theme::builtin(name).is_some(), "{name}");
        }
    }

    #[test]
    fn a_user_theme_overrides_its_base() {
        let dir = tempfile::tempdir().expect("dir");
        std::fs::write(dir.path().join("mine.toml"), "base = \"light\"\n[colors]\nwarn = \"#010203\"\n")
            .expect("write");
        let t = Theme::load("mine", Some(dir.path())).expect("loads");
        let light = Theme::builtin("light").expect("light");
        assert_eq!(t.colors.warn, Color::Rgb(1, 2, 3));
        assert_eq!(t.colors.text, light.colors.text);
        assert!(matches!(Theme::load("nope", Some(dir.path())), Err(ThemeError::NotFound { .. })));
        std::fs::write(dir.path().join("bad.toml"), "[colors]\nwarn = \"blurple\"\n").expect("write");
        assert!(matches!(Theme::load("bad", Some(dir.path())), Err(ThemeError::Parse { .. })));
    }
}
