//! Closed vocabularies (methods, rectifiers, colour maps, …) named on command lines and in
//! configuration files.
//!
//! Each vocabulary is one enum implementing [`Vocabulary`]: its list of values, their names and
//! one-line descriptions. Parsing, error messages, `--help` text and the README's lists are all
//! derived from that one table, so a new value is added in one place.

use std::fmt;

/// An enum whose values have names: the single source of a vocabulary.
pub trait Vocabulary: Copy + PartialEq + Sized + 'static {
    /// What one value is called in messages (`method`, `rectifier`).
    const KIND: &'static str;
    /// Every value, in the order lists show them.
    const ALL: &'static [Self];

    /// The name used on command lines and in files.
    fn name(self) -> &'static str;

    /// One line for `--help` and documentation.
    fn description(self) -> &'static str;

    /// Other accepted spellings (kept for compatibility; never shown in lists).
    fn aliases(self) -> &'static [&'static str] {
        &[]
    }

    /// The value named `text` (case-insensitive, aliases included).
    fn parse_name(text: &str) -> Result<Self, UnknownName> {
        let wanted = text.to_ascii_lowercase();
        Self::ALL
            .iter()
            .copied()
            .find(|v| v.name() == wanted || v.aliases().contains(&wanted.as_str()))
            .ok_or_else(|| UnknownName {
                kind: Self::KIND,
                given: text.to_owned(),
                expected: names::<Self>(),
            })
    }
}

/// The names of every value of `V`, in order.
pub fn names<V: Vocabulary>() -> Vec<&'static str> {
    V::ALL.iter().map(|v| v.name()).collect()
}

/// A name that is not in a vocabulary.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} `{given}`; expected one of: {}", .expected.join(", "))]
pub struct UnknownName {
    /// The vocabulary (`method`).
    pub kind: &'static str,
    /// What was given.
    pub given: String,
    /// Every accepted name.
    pub expected: Vec<&'static str>,
}

/// Writes a value's name (for `Display` implementations).
pub(crate) fn write_name<V: Vocabulary>(value: V, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    f.write_str(value.name())
}

/// A clap value parser for a vocabulary: possible values with their descriptions in `--help`,
/// completion and "did you mean" from the same table.
#[cfg(feature = "clap")]
pub fn value_parser<V: Vocabulary + Send + Sync>() -> impl clap::builder::TypedValueParser<Value = V> {
    use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
    let values: Vec<PossibleValue> = V::ALL
        .iter()
        .map(|v| {
            PossibleValue::new(v.name())
                .help(v.description())
                .aliases(v.aliases().iter().copied())
        })
        .collect();
    PossibleValuesParser::new(values).try_map(|name: String| V::parse_name(&name))
}

/// Serde by name for vocabularies: a value is written as its name and read from any of its
/// names, e.g. `"method": "gradcam++"` in a configuration file. The calling crate depends on
/// `serde`.
#[macro_export]
macro_rules! vocabulary_serde {
    ($($vocabulary:ty),* $(,)?) => {$(
        impl ::serde::Serialize for $vocabulary {
            fn serialize<S: ::serde::Serializer>(&self, serializer: S) -> ::std::result::Result<S::Ok, S::Error> {
                serializer.serialize_str($crate::Vocabulary::name(*self))
            }
        }

        impl<'de> ::serde::Deserialize<'de> for $vocabulary {
            fn deserialize<D: ::serde::Deserializer<'de>>(deserializer: D) -> ::std::result::Result<Self, D::Error> {
                let name = <::std::borrow::Cow<'de, str> as ::serde::Deserialize>::deserialize(deserializer)?;
                <$vocabulary as $crate::Vocabulary>::parse_name(&name).map_err(::serde::de::Error::custom)
            }
        }
    )*};
}

#[cfg(feature = "serde")]
vocabulary_serde!(crate::Method, crate::Rectifier);

#[cfg(all(test, feature = "serde"))]
mod serde_tests {
    use crate::{Method, Rectifier};

    #[test]
    fn vocabularies_are_written_and_read_by_name() {
        assert_eq!(
            serde_json::to_string(&Method::GradCamPlusPlus).unwrap(),
            "\"gradcam++\""
        );
        assert_eq!(
            serde_json::from_str::<Rectifier>("\"none\"").unwrap(),
            Rectifier::Signed
        );
        let error = serde_json::from_str::<Method>("\"gradcam+\"").unwrap_err().to_string();
        assert!(error.contains("expected one of: gradcam"), "{error}");
    }
}
