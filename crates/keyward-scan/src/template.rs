//! Renders the rule templates (`{a:36}`: 36 random characters of class `a`) into text,
//! for the rules' tests and the evaluation corpus. Deterministic for a given seed.
//!
//! Classes: `a` alphanumeric, `l` lowercase alphanumeric, `u` uppercase alphanumeric,
//! `A` letters, `L` lowercase letters, `h` lowercase hex, `d` digits, `b` base64,
//! `B` base64url, `Z` base32 (`A-Z2-7`), `Q` bech32 uppercase, `x` the letter x.

/// A small deterministic generator (SplitMix64): enough for test data, never for secrets.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

fn class(c: char) -> Option<&'static [u8]> {
    Some(match c {
        'a' => b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
        'l' => b"0123456789abcdefghijklmnopqrstuvwxyz",
        'u' => b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ",
        'A' => b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
        'L' => b"abcdefghijklmnopqrstuvwxyz",
        'h' => b"0123456789abcdef",
        'd' => b"0123456789",
        'b' => b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
        'B' => b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-",
        'Z' => b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567",
        'Q' => b"QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L",
        'x' => b"x",
        _ => return None,
    })
}

/// Random characters of a class; panics on an unknown class (templates are ours).
pub fn random(rng: &mut Rng, class_char: char, len: usize) -> String {
    let set = class(class_char).unwrap_or_else(|| panic!("unknown template class {class_char}"));
    (0..len).map(|_| char::from(*rng.pick(set))).collect()
}

/// Renders a template: each `{c:N}` becomes N random characters of class `c`; everything
/// else is copied. A `{` that does not start a placeholder is copied as is.
pub fn render(template: &str, rng: &mut Rng) -> String {
    let mut out = String::with_capacity(template.len() * 2);
    let mut rest = template;
    while let Some(i) = rest.find('{') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let parsed = after.find('}').and_then(|end| {
            let inner = &after[..end];
            let (c, n) = inner.split_once(':')?;
            let mut chars = c.chars();
            let c = chars.next()?;
            if chars.next().is_some() || class(c).is_none() {
                return None;
            }
            Some((c, n.parse::<usize>().ok()?, end))
        });
        match parsed {
            Some((c, n, end)) => {
                out.push_str(&random(rng, c, n));
                rest = &after[end + 1..];
            }
            None => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_placeholders_and_keeps_the_rest() {
        let mut rng = Rng::new(1);
        let s = render("a{h:8}b{x:3}c${l:2}{z}", &mut rng);
        assert!(s.starts_with('a'));
        assert_eq!(s.len(), 1 + 8 + 1 + 3 + 1 + 1 + 2 + 3);
        assert!(s.contains("bxxxc$"));
        assert!(s.ends_with("{z}"));
    }
}
