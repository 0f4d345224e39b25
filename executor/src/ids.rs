//! [`StageId`] is a stage's index in its job (stages come in dependency
//! order); [`PartitionId`] is a partition's index in its stage, which is
//! also its task's. Both are a `u32` on the wire (protobuf, shuffle tickets
//! and paths); in memory they are distinct types, so a stage is never passed
//! where a partition is meant. Counts (a stage's number of tasks, attempts)
//! stay plain integers.
//!
//! `Display`, `Debug` and `FromStr` are the bare number, as the wire and
//! the logs have always written them (`s3/p7`, `reads stages [0, 1]`).

/// Declares a `u32` index newtype with its conversions and formatting.
macro_rules! index_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        pub struct $name(u32);

        impl $name {
            /// The index `value`.
            pub const fn new(value: u32) -> Self {
                Self(value)
            }

            /// The index as a number (its wire form).
            pub const fn get(self) -> u32 {
                self.0
            }

            /// The index as a `usize`, to index a slice.
            pub const fn index(self) -> usize {
                self.0 as usize
            }

            /// The first `n` indices, `0..n`, in order.
            pub fn all(n: u32) -> impl DoubleEndedIterator<Item = Self> + ExactSizeIterator {
                (0..n).map(Self)
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                ::std::fmt::Display::fmt(&self.0, f)
            }
        }

        impl ::std::fmt::Debug for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                ::std::fmt::Debug::fmt(&self.0, f)
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = ::std::num::ParseIntError;

            /// Parses the bare number.
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                s.parse().map(Self)
            }
        }

        impl From<u32> for $name {
            fn from(value: u32) -> Self {
                Self(value)
            }
        }

        impl From<$name> for u32 {
            fn from(id: $name) -> u32 {
                id.0
            }
        }
    };
}

index_type!(
    /// A stage of a job: its index in the job's stages, which come in
    /// dependency order (a stage's inputs precede it).
    StageId
);

index_type!(
    /// A partition of a stage: its index among the stage's partitions. A
    /// stage runs one task per partition, so it also names that task (and
    /// a map task's output, read by the next stage).
    PartitionId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_formats_as_the_number() {
        let s = StageId::new(3);
        assert_eq!((s.get(), s.index()), (3, 3usize));
        assert_eq!(s.to_string(), "3");
        assert_eq!(format!("{s:?}"), "3");
        assert_eq!(
            format!("{:?}", vec![StageId::new(0), StageId::new(1)]),
            "[0, 1]"
        );
        assert_eq!("3".parse::<StageId>(), Ok(s));
        assert!("s3".parse::<StageId>().is_err());
        assert_eq!(StageId::from(3), s);
        assert_eq!(u32::from(s), 3);
        assert_eq!(PartitionId::default(), PartitionId::new(0));
        assert!(PartitionId::new(1) < PartitionId::new(2));
    }

    #[test]
    fn all_counts_from_zero() {
        let ps: Vec<PartitionId> = PartitionId::all(3).collect();
        assert_eq!(ps, [0, 1, 2].map(PartitionId::new));
        assert_eq!(StageId::all(0).count(), 0);
        assert_eq!(PartitionId::all(4).len(), 4);
    }
}
