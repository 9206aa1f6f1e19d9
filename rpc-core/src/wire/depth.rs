//! Decoding with a nesting limit.
//!
//! Serde decodes nested values by recursion: a value nested a million deep
//! (ten bytes of postcard per level for a recursive enum) recurses a
//! million times and overflows the thread's stack, which aborts the whole
//! process, not just the call. [`Limited`] wraps any deserializer and
//! refuses to go deeper than a limit, so such input fails as one bad
//! request.
//!
//! Depth counts compound values entered: a sequence, tuple, map, struct,
//! enum variant, `Some` or newtype each add one while their contents decode.

use std::cell::Cell;
use std::fmt;

use serde::de::{
    self, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess, VariantAccess, Visitor,
};

/// The default nesting limit for decoding arguments and results: 128
/// levels, as serde_json's. Recursive types deeper than this are refused.
pub const DEFAULT_MAX_DECODE_DEPTH: u32 = 128;

/// How deep decoding may still go, and whether it hit the floor.
#[derive(Debug)]
pub(crate) struct Depth {
    remaining: Cell<u32>,
    exceeded: Cell<bool>,
}

impl Depth {
    pub(crate) fn new(max: u32) -> Depth {
        Depth {
            remaining: Cell::new(max),
            exceeded: Cell::new(false),
        }
    }

    /// Whether decoding was stopped by the limit.
    pub(crate) fn exceeded(&self) -> bool {
        self.exceeded.get()
    }

    /// Runs `nested` one level deeper, or fails without running it.
    fn nest<T, E: de::Error>(&self, nested: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
        let remaining = self.remaining.get();
        if remaining == 0 {
            self.exceeded.set(true);
            return Err(E::custom("the value is nested too deeply"));
        }
        self.remaining.set(remaining - 1);
        let result = nested();
        self.remaining.set(remaining);
        result
    }
}

/// A deserializer that hands every visitor to its inner deserializer
/// wrapped, so that each compound value it visits counts against `depth`.
pub(crate) struct Limited<'a, D> {
    pub(crate) inner: D,
    pub(crate) depth: &'a Depth,
}

/// A visitor whose compound visits count one level.
struct Wrap<'a, V> {
    inner: V,
    depth: &'a Depth,
}

/// A seed whose deserializer is wrapped.
struct Seed<'a, S> {
    inner: S,
    depth: &'a Depth,
}

/// Accessors whose elements are decoded through wrapped deserializers.
struct Access<'a, A> {
    inner: A,
    depth: &'a Depth,
}

impl<'a, V> Wrap<'a, V> {
    fn new(inner: V, depth: &'a Depth) -> Self {
        Wrap { inner, depth }
    }
}

macro_rules! forward_deserialize {
    ($($method:ident($($arg:ident: $ty:ty),*);)*) => {
        $(
            fn $method<V: Visitor<'de>>(self, $($arg: $ty,)* visitor: V) -> Result<V::Value, D::Error> {
                self.inner.$method($($arg,)* Wrap::new(visitor, self.depth))
            }
        )*
    };
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Limited<'_, D> {
    type Error = D::Error;

    forward_deserialize! {
        deserialize_any();
        deserialize_bool();
        deserialize_i8();
        deserialize_i16();
        deserialize_i32();
        deserialize_i64();
        deserialize_i128();
        deserialize_u8();
        deserialize_u16();
        deserialize_u32();
        deserialize_u64();
        deserialize_u128();
        deserialize_f32();
        deserialize_f64();
        deserialize_char();
        deserialize_str();
        deserialize_string();
        deserialize_bytes();
        deserialize_byte_buf();
        deserialize_option();
        deserialize_unit();
        deserialize_unit_struct(name: &'static str);
        deserialize_newtype_struct(name: &'static str);
        deserialize_seq();
        deserialize_tuple(len: usize);
        deserialize_tuple_struct(name: &'static str, len: usize);
        deserialize_map();
        deserialize_struct(name: &'static str, fields: &'static [&'static str]);
        deserialize_enum(name: &'static str, variants: &'static [&'static str]);
        deserialize_identifier();
        deserialize_ignored_any();
    }

    fn is_human_readable(&self) -> bool {
        self.inner.is_human_readable()
    }
}

macro_rules! forward_visit {
    ($($method:ident($ty:ty);)*) => {
        $(
            fn $method<E: de::Error>(self, value: $ty) -> Result<Self::Value, E> {
                self.inner.$method(value)
            }
        )*
    };
}

impl<'de, V: Visitor<'de>> Visitor<'de> for Wrap<'_, V> {
    type Value = V::Value;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.expecting(formatter)
    }

    forward_visit! {
        visit_bool(bool);
        visit_i8(i8);
        visit_i16(i16);
        visit_i32(i32);
        visit_i64(i64);
        visit_i128(i128);
        visit_u8(u8);
        visit_u16(u16);
        visit_u32(u32);
        visit_u64(u64);
        visit_u128(u128);
        visit_f32(f32);
        visit_f64(f64);
        visit_char(char);
        visit_str(&str);
        visit_borrowed_str(&'de str);
        visit_string(String);
        visit_bytes(&[u8]);
        visit_borrowed_bytes(&'de [u8]);
        visit_byte_buf(Vec<u8>);
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        self.inner.visit_none()
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        self.inner.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        let depth = self.depth;
        depth.nest(|| {
            self.inner.visit_some(Limited {
                inner: deserializer,
                depth,
            })
        })
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        let depth = self.depth;
        depth.nest(|| {
            self.inner.visit_newtype_struct(Limited {
                inner: deserializer,
                depth,
            })
        })
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        let depth = self.depth;
        depth.nest(|| self.inner.visit_seq(Access { inner: seq, depth }))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        let depth = self.depth;
        depth.nest(|| self.inner.visit_map(Access { inner: map, depth }))
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<Self::Value, A::Error> {
        let depth = self.depth;
        depth.nest(|| self.inner.visit_enum(Access { inner: data, depth }))
    }
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for Seed<'_, S> {
    type Value = S::Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<S::Value, D::Error> {
        self.inner.deserialize(Limited {
            inner: deserializer,
            depth: self.depth,
        })
    }
}

impl<'de, A: SeqAccess<'de>> SeqAccess<'de> for Access<'_, A> {
    type Error = A::Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, A::Error> {
        self.inner.next_element_seed(Seed {
            inner: seed,
            depth: self.depth,
        })
    }

    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint()
    }
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for Access<'_, A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        self.inner.next_key_seed(Seed {
            inner: seed,
            depth: self.depth,
        })
    }

    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value, A::Error> {
        self.inner.next_value_seed(Seed {
            inner: seed,
            depth: self.depth,
        })
    }

    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint()
    }
}

impl<'a, 'de, A: EnumAccess<'de>> EnumAccess<'de> for Access<'a, A> {
    type Error = A::Error;
    type Variant = Access<'a, A::Variant>;

    fn variant_seed<T: DeserializeSeed<'de>>(
        self,
        seed: T,
    ) -> Result<(T::Value, Self::Variant), A::Error> {
        let depth = self.depth;
        let (value, variant) = self.inner.variant_seed(Seed { inner: seed, depth })?;
        Ok((
            value,
            Access {
                inner: variant,
                depth,
            },
        ))
    }
}

impl<'de, A: VariantAccess<'de>> VariantAccess<'de> for Access<'_, A> {
    type Error = A::Error;

    fn unit_variant(self) -> Result<(), A::Error> {
        self.inner.unit_variant()
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, A::Error> {
        self.inner.newtype_variant_seed(Seed {
            inner: seed,
            depth: self.depth,
        })
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, A::Error> {
        self.inner
            .tuple_variant(len, Wrap::new(visitor, self.depth))
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, A::Error> {
        self.inner
            .struct_variant(fields, Wrap::new(visitor, self.depth))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Serialize};

    use crate::wire::{ValueError, decode_limited};

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum Expr {
        Num(i64),
        Add(Box<Expr>, Box<Expr>),
        Neg { inner: Box<Expr> },
    }

    /// Postcard bytes of `Add(Add(...(Num(1), Num(1))...), Num(1))`, nested
    /// `levels` deep, written by hand so that no deep value is ever built.
    fn deeply_nested_add(levels: usize) -> Vec<u8> {
        let mut bytes = vec![0x01; levels]; // variant 1 (Add), left operand follows
        bytes.extend_from_slice(&[0x00, 0x02]); // innermost left: Num(1)
        for _ in 0..levels {
            bytes.extend_from_slice(&[0x00, 0x02]); // each right operand: Num(1)
        }
        bytes
    }

    #[test]
    fn values_within_the_limit_decode_as_without_it() {
        let value = Expr::Neg {
            inner: Box::new(Expr::Add(Box::new(Expr::Num(-3)), Box::new(Expr::Num(7)))),
        };
        let bytes = postcard::to_allocvec(&value).unwrap();
        assert_eq!(decode_limited::<Expr>(&bytes, 16).unwrap(), value);

        let map: BTreeMap<String, Option<(u8, Vec<u16>)>> = [
            ("a".to_owned(), Some((1, vec![2, 3]))),
            ("b".to_owned(), None),
        ]
        .into();
        let bytes = postcard::to_allocvec(&map).unwrap();
        assert_eq!(decode_limited::<BTreeMap<_, _>>(&bytes, 8).unwrap(), map);
    }

    #[test]
    fn a_value_one_level_past_the_limit_is_refused_by_name() {
        // Some(Some(Some(1))) is three levels deep.
        let bytes = postcard::to_allocvec(&Some(Some(Some(1u8)))).unwrap();
        assert!(decode_limited::<Option<Option<Option<u8>>>>(&bytes, 3).is_ok());
        let error = decode_limited::<Option<Option<Option<u8>>>>(&bytes, 2).unwrap_err();
        assert!(matches!(error, ValueError::TooDeep { max: 2 }), "{error:?}");
        assert_eq!(
            error.to_string(),
            "the value is nested more than 2 levels deep"
        );
    }

    #[test]
    fn a_million_levels_of_nesting_fail_without_overflowing_the_stack() {
        // Run on a small stack: the limit, not the stack's size, must stop it.
        let outcome = std::thread::Builder::new()
            .stack_size(256 << 10)
            .spawn(|| {
                let bytes = deeply_nested_add(1_000_000);
                decode_limited::<Expr>(&bytes, 128)
            })
            .unwrap()
            .join()
            .unwrap();
        assert!(matches!(outcome, Err(ValueError::TooDeep { max: 128 })));
        let shallow = deeply_nested_add(10);
        assert!(decode_limited::<Expr>(&shallow, 128).is_ok());
    }
}
