//! How many colours the terminal shows, from `COLORTERM` and `TERM`, and how a theme's
//! `#rrggbb` colours are brought down to the 256 or the 16 basic colours when the
//! terminal has no true colour (a truecolor escape there shows as garbage or nothing).

use ratatui::style::Color;

/// The colours a terminal can show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColorDepth {
    /// 24-bit colour (`COLORTERM=truecolor` or `24bit`).
    TrueColor,
    /// The xterm 256-colour palette (`TERM=*256color*`).
    Indexed256,
    /// The 16 basic colours (anything else).
    Basic16,
}

/// The 16 basic colours with the RGB xterm gives them, for the nearest match.
const BASIC: [(Color, (u8, u8, u8)); 16] = [
    (Color::Black, (0, 0, 0)),
    (Color::Red, (205, 0, 0)),
    (Color::Green, (0, 205, 0)),
    (Color::Yellow, (205, 205, 0)),
    (Color::Blue, (0, 0, 238)),
    (Color::Magenta, (205, 0, 205)),
    (Color::Cyan, (0, 205, 205)),
    (Color::Gray, (229, 229, 229)),
    (Color::DarkGray, (127, 127, 127)),
    (Color::LightRed, (255, 0, 0)),
    (Color::LightGreen, (0, 255, 0)),
    (Color::LightYellow, (255, 255, 0)),
    (Color::LightBlue, (92, 92, 255)),
    (Color::LightMagenta, (255, 0, 255)),
    (Color::LightCyan, (0, 255, 255)),
    (Color::White, (255, 255, 255)),
];

/// The six levels of each axis of the xterm 6x6x6 colour cube.
const CUBE: [u8; 6] = [0, 95, 135, 175, 215, 255];

impl ColorDepth {
    /// The depth of the terminal this process runs in.
    pub fn detect() -> ColorDepth {
        ColorDepth::from_env(std::env::var("COLORTERM").ok().as_deref(), std::env::var("TERM").ok().as_deref())
    }

    /// The depth `COLORTERM` and `TERM` announce.
    pub fn from_env(colorterm: Option<&str>, term: Option<&str>) -> ColorDepth {
        let colorterm = colorterm.unwrap_or("").to_ascii_lowercase();
        let term = term.unwrap_or("").to_ascii_lowercase();
        if colorterm == "truecolor" || colorterm == "24bit" || term.contains("direct") {
            ColorDepth::TrueColor
        } else if term.contains("256color") {
            ColorDepth::Indexed256
        } else {
            ColorDepth::Basic16
        }
    }

    /// `c` in a colour this depth can show; named colours pass unchanged.
    pub fn fit(self, c: Color) -> Color {
        let Color::Rgb(r, g, b) = c else { return c };
        match self {
            ColorDepth::TrueColor => c,
            ColorDepth::Indexed256 => Color::Indexed(index_256(r, g, b)),
            ColorDepth::Basic16 => nearest_basic(r, g, b),
        }
    }
}

fn distance((r1, g1, b1): (u8, u8, u8), (r2, g2, b2): (u8, u8, u8)) -> u32 {
    let d = |a: u8, b: u8| (a as i32 - b as i32).pow(2) as u32;
    d(r1, r2) + d(g1, g2) + d(b1, b2)
}

fn nearest_basic(r: u8, g: u8, b: u8) -> Color {
    BASIC.iter().min_by_key(|(_, rgb)| distance(*rgb, (r, g, b))).map_or(Color::Reset, |(c, _)| *c)
}

/// The nearest entry of the 6x6x6 cube (16-231) or of the grey ramp (232-255).
fn index_256(r: u8, g: u8, b: u8) -> u8 {
    let level =
        |v: u8| CUBE.iter().enumerate().min_by_key(|(_, l)| (**l as i32 - v as i32).abs()).map_or(0, |(i, _)| i);
    let (ri, gi, bi) = (level(r), level(g), level(b));
    let cube = (CUBE[ri], CUBE[gi], CUBE[bi]);
    let grey_step = ((r as u32 + g as u32 + b as u32) / 3).saturating_sub(8) / 10;
    let grey_step = grey_step.min(23) as u8;
    let grey = 8 + 10 * grey_step;
    if distance((grey, grey, grey), (r, g, b)) < distance(cube, (r, g, b)) {
        232 + grey_step
    } else {
        16 + 36 * ri as u8 + 6 * gi as u8 + bi as u8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_follows_colorterm_then_term() {
        assert_eq!(ColorDepth::from_env(Some("truecolor"), Some("xterm")), ColorDepth::TrueColor);
        assert_eq!(ColorDepth::from_env(Some("24bit"), None), ColorDepth::TrueColor);
        assert_eq!(ColorDepth::from_env(None, Some("tmux-256color")), ColorDepth::Indexed256);
        assert_eq!(ColorDepth::from_env(None, Some("screen")), ColorDepth::Basic16);
        assert_eq!(ColorDepth::from_env(None, None), ColorDepth::Basic16);
    }

    #[test]
    fn rgb_colours_come_down_to_the_nearest_palette_entry() {
        assert_eq!(ColorDepth::Indexed256.fit(Color::Rgb(255, 0, 0)), Color::Indexed(196));
        assert_eq!(ColorDepth::Indexed256.fit(Color::Rgb(128, 128, 128)), Color::Indexed(244));
        assert_eq!(ColorDepth::Basic16.fit(Color::Rgb(250, 10, 10)), Color::LightRed);
        assert_eq!(ColorDepth::Basic16.fit(Color::Rgb(20, 20, 20)), Color::Black);
        assert_eq!(ColorDepth::Basic16.fit(Color::Yellow), Color::Yellow);
        assert_eq!(ColorDepth::TrueColor.fit(Color::Rgb(1, 2, 3)), Color::Rgb(1, 2, 3));
        // Every built-in theme comes down to no RGB at all.
        for (name, _) in crate::console::theme::BUILTIN {
            let t = crate::console::theme::Theme::builtin(name).expect("theme").for_depth(ColorDepth::Indexed256);
            assert!(!format!("{:?}", t.colors).contains("Rgb"), "{name}");
        }
    }
}
