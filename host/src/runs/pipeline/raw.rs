//! The raw model, shared by TOML and JSON. Every field is optional here so that missing
//! ones are reported by validation, with their path, rather than by serde. Unknown keys
//! are errors everywhere.

use super::{MAX_STEPS, MAX_TOOLS};
use crate::engine::limits::{parse_duration, parse_size};
use serde::Deserialize;
use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Pipeline")]
pub(super) struct RawPipeline {
    #[schemars(required)]
    pub(super) name: Option<String>,
    pub(super) description: Option<String>,
    pub(super) defaults: Option<Table<RawLimits>>,
    pub(super) budget: Option<Table<RawBudget>>,
    pub(super) tools: Option<Value>,
    #[schemars(required)]
    pub(super) steps: Option<Capped<Table<RawStep>, MAX_STEPS>>,
}

#[derive(Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "StepDefaults")]
pub(super) struct RawLimits {
    pub(super) fuel: Option<u64>,
    pub(super) tokens: Option<u64>,
    pub(super) timeout: Option<Dur>,
    pub(super) memory: Option<Size>,
    pub(super) max_attempts: Option<u32>,
    pub(super) backoff: Option<Dur>,
    pub(super) backoff_max: Option<Dur>,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Budget")]
pub(super) struct RawBudget {
    pub(super) fuel: Option<u64>,
    pub(super) tokens: Option<u64>,
    pub(super) timeout: Option<Dur>,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Step")]
pub(super) struct RawStep {
    #[schemars(required)]
    pub(super) name: Option<String>,
    #[schemars(required)]
    pub(super) plugin: Option<String>,
    pub(super) config: Option<Value>,
    pub(super) tools: Option<Capped<String, MAX_TOOLS>>,
    pub(super) on_failure: Option<Table<RawFeedback>>,
    pub(super) input_from: Option<String>,
    pub(super) http: Option<Capped<String, MAX_TOOLS>>,
    pub(super) models: Option<Capped<String, MAX_TOOLS>>,
    pub(super) connector: Option<String>,
    pub(super) max_pages: Option<u32>,
    pub(super) max_items: Option<u32>,
    pub(super) fuel: Option<u64>,
    pub(super) tokens: Option<u64>,
    pub(super) timeout: Option<Dur>,
    pub(super) memory: Option<Size>,
    pub(super) max_attempts: Option<u32>,
    pub(super) backoff: Option<Dur>,
    pub(super) backoff_max: Option<Dur>,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Feedback")]
pub(super) struct RawFeedback {
    pub(super) send_back_to: Option<String>,
    pub(super) max_loops: Option<u32>,
}

/// What a table is called in "invalid type" errors.
pub(super) trait Expecting {
    const EXPECTING: &'static str;
}

impl Expecting for RawPipeline {
    const EXPECTING: &'static str = "a pipeline table";
}
impl Expecting for RawLimits {
    const EXPECTING: &'static str = "a table of step defaults";
}
impl Expecting for RawBudget {
    const EXPECTING: &'static str = "a budget table";
}
impl Expecting for RawStep {
    const EXPECTING: &'static str = "a step table";
}
impl Expecting for RawFeedback {
    const EXPECTING: &'static str = "a table like { send_back_to = \"step\", max_loops = 3 }";
}

/// A struct written as a table only: serde's derive would also take a list of the
/// fields' values, which no pipeline author means.
pub(super) struct Table<T>(pub(super) T);

impl<'de, T: Deserialize<'de> + Expecting> Deserialize<'de> for Table<T> {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TableVisitor<T>(PhantomData<T>);

        impl<'de, T: Deserialize<'de> + Expecting> Visitor<'de> for TableVisitor<T> {
            type Value = Table<T>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(T::EXPECTING)
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Table<T>, A::Error> {
                T::deserialize(de::value::MapAccessDeserializer::new(map)).map(Table)
            }
        }

        deserializer.deserialize_map(TableVisitor(PhantomData))
    }
}

/// A list refused as soon as it has more than `N` entries.
pub(super) struct Capped<T, const N: usize>(pub(super) Vec<T>);

impl<'de, T: Deserialize<'de>, const N: usize> Deserialize<'de> for Capped<T, N> {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct CappedVisitor<T, const N: usize>(PhantomData<T>);

        impl<'de, T: Deserialize<'de>, const N: usize> Visitor<'de> for CappedVisitor<T, N> {
            type Value = Capped<T, N>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "a list of at most {N} entries")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                    if items.len() == N {
                        if seq.next_element::<de::IgnoredAny>()?.is_some() {
                            return Err(de::Error::custom(format_args!(
                                "has more than {N} entries (the limit is {N})"
                            )));
                        }
                        break;
                    }
                }
                Ok(Capped(items))
            }
        }

        deserializer.deserialize_seq(CappedVisitor(PhantomData))
    }
}

/// A duration written as a string, e.g. `"30s"` or `"1m 30s"`.
#[derive(Clone, Copy)]
pub(super) struct Dur(pub(super) Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DurVisitor;

        impl Visitor<'_> for DurVisitor {
            type Value = Dur;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as \"30s\", \"250ms\" or \"1h30m\"")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Dur, E> {
                parse_duration(v).map(Dur).map_err(E::custom)
            }
        }

        deserializer.deserialize_str(DurVisitor)
    }
}

/// A size written as a string (`"64MiB"`) or a number of bytes.
#[derive(Clone, Copy)]
pub(super) struct Size(pub(super) usize);

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SizeVisitor;

        impl Visitor<'_> for SizeVisitor {
            type Value = Size;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size such as \"64MiB\", or a number of bytes")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Size, E> {
                parse_size(v).map(Size).map_err(E::custom)
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Size, E> {
                usize::try_from(v)
                    .map(Size)
                    .map_err(|_| E::custom(format!("{v} bytes is too large")))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Size, E> {
                match u64::try_from(v) {
                    Ok(v) => self.visit_u64(v),
                    Err(_) => Err(E::custom(format!("a size cannot be negative (got {v})"))),
                }
            }
        }

        deserializer.deserialize_any(SizeVisitor)
    }
}
