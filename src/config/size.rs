//! Sizes (PROTOCOL.md §8.2): an integer number of bytes, or `<digits>[ ]<unit>` with a
//! unit of B, KB, MB, GB or TB in any case, in powers of 1024.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size(pub u64);

impl Size {
    pub fn bytes(self) -> u64 {
        self.0
    }

    pub fn as_usize(self) -> usize {
        usize::try_from(self.0).unwrap_or(usize::MAX)
    }

    pub fn parse(text: &str) -> Option<Size> {
        let digits_end = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        if digits_end == 0 {
            return None;
        }
        let number: u64 = text[..digits_end].parse().ok()?;
        let rest = text[digits_end..]
            .strip_prefix(' ')
            .unwrap_or(&text[digits_end..]);
        let shift = match rest.to_ascii_lowercase().as_str() {
            "b" => 0,
            "kb" => 10,
            "mb" => 20,
            "gb" => 30,
            "tb" => 40,
            _ => return None,
        };
        number.checked_mul(1u64 << shift).map(Size)
    }
}

impl Serialize for Size {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(self.0)
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bytes(u64),
            Text(String),
        }
        match Raw::deserialize(deserializer).map_err(|_| {
            serde::de::Error::custom("expected a number of bytes or a size string such as \"1MB\"")
        })? {
            Raw::Bytes(n) => Ok(Size(n)),
            Raw::Text(t) => Size::parse(&t).ok_or_else(|| {
                serde::de::Error::custom(
                    "expected a size such as 512, \"512KB\" or \"1 MB\" (units B, KB, MB, GB, TB)",
                )
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Size;

    #[test]
    fn parses_the_strict_grammar() {
        assert_eq!(Size::parse("1MB"), Some(Size(1 << 20)));
        assert_eq!(Size::parse("1 mb"), Some(Size(1 << 20)));
        assert_eq!(Size::parse("512kB"), Some(Size(512 << 10)));
        assert_eq!(Size::parse("10B"), Some(Size(10)));
        assert_eq!(Size::parse("2TB"), Some(Size(2 << 40)));
        for bad in [
            "1.5MB", "MB", "1  MB", "1 XB", "-1MB", "1MBs", "", " 1MB", "1024",
        ] {
            assert_eq!(Size::parse(bad), None, "{bad}");
        }
    }
}
