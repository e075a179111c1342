//! Shards: one pipeline split between N workers, each paging of a leaf resource owned by
//! exactly one of them through a stable hash of its partition.

use std::fmt;
use std::str::FromStr;

/// Shard `index` of `count`, counted from 0 as a Kubernetes Indexed Job's
/// `JOB_COMPLETION_INDEX` is (`0/4` to `3/4`).
///
/// Which shard a paging belongs to is [`Shard::owner_of`] its key: xxh3-64 of the key's
/// bytes, modulo the count. The hash is a published algorithm with fixed output, so a rerun
/// of shard I (any build, any machine) takes the same partitions, and every key has one
/// owner.
///
/// ```
/// use source_errors::Shard;
/// let shard: Shard = "1/4".parse().unwrap();
/// assert_eq!((shard.index(), shard.count()), (1, 4));
/// assert_eq!(shard.to_string(), "1/4");
/// let owners: Vec<u32> = (0..4).map(|i| Shard::new(i, 4).unwrap())
///     .filter(|s| s.owns("project-a")).map(|s| s.index()).collect();
/// assert_eq!(owners.len(), 1);
/// assert!("4/4".parse::<Shard>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Shard {
    index: u32,
    count: u32,
}

impl Shard {
    /// Shard `index` of `count`: `count` at least 1, `index` below it.
    pub fn new(index: u32, count: u32) -> Result<Shard, String> {
        if count == 0 {
            return Err("the number of shards must be at least 1".into());
        }
        if index >= count {
            return Err(format!(
                "shard {index} of {count} does not exist: shards count from 0 to {}",
                count - 1
            ));
        }
        Ok(Shard { index, count })
    }

    /// The whole pipeline in one process: shard 0 of 1.
    pub fn whole() -> Shard {
        Shard { index: 0, count: 1 }
    }

    /// This shard's index, from 0.
    pub fn index(self) -> u32 {
        self.index
    }

    /// How many shards there are.
    pub fn count(self) -> u32 {
        self.count
    }

    /// Whether the pipeline is split at all (more than one shard).
    pub fn is_split(self) -> bool {
        self.count > 1
    }

    /// The shard that writes what every shard fetches (the parent resources): shard 0.
    pub fn writes_shared(self) -> bool {
        self.index == 0
    }

    /// The index of the shard that owns `key`.
    pub fn owner_of(key: &str, count: u32) -> u32 {
        (xxhash_rust::xxh3::xxh3_64(key.as_bytes()) % u64::from(count.max(1))) as u32
    }

    /// Whether this shard owns `key`.
    pub fn owns(self, key: &str) -> bool {
        Shard::owner_of(key, self.count) == self.index
    }
}

impl Default for Shard {
    fn default() -> Self {
        Shard::whole()
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl FromStr for Shard {
    type Err = String;

    /// `I/N`, as `--shard` and `ERRLAKE_SHARD` take it.
    fn from_str(s: &str) -> Result<Shard, String> {
        let (index, count) = s
            .trim()
            .split_once('/')
            .ok_or_else(|| format!("`{s}` is not a shard: write I/N, as 0/4 (I counts from 0)"))?;
        let number = |part: &str, what: &str| {
            part.trim()
                .parse::<u32>()
                .map_err(|_| format!("`{s}` is not a shard: {what} `{part}` is not a number"))
        };
        Shard::new(number(index, "the index")?, number(count, "the count")?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_has_exactly_one_owner_and_keys_spread() {
        for count in [1, 2, 3, 4, 8] {
            let mut per_shard = vec![0u32; count as usize];
            for k in 0..4000 {
                let key = format!("project-{k}");
                let owners: Vec<u32> = (0..count)
                    .filter(|&i| Shard::new(i, count).unwrap().owns(&key))
                    .collect();
                assert_eq!(owners.len(), 1, "{key} of {count}: {owners:?}");
                per_shard[owners[0] as usize] += 1;
            }
            let even = 4000 / count;
            for n in per_shard {
                assert!(n.abs_diff(even) < even / 5 + 20, "{count} shards: {n}");
            }
        }
    }

    /// A rerun must take the same partitions as the run before it, whatever build runs it.
    /// The owners were computed by Python's `xxhash` package (`xxh3_64_intdigest(key) % 4`),
    /// an implementation independent of ours.
    #[test]
    fn the_owner_of_a_key_stays_what_it_was() {
        let owners: Vec<u32> = ["5a2f0c", "project_id=1", "errors", "b0d1"]
            .iter()
            .map(|k| Shard::owner_of(k, 4))
            .collect();
        assert_eq!(owners, [3, 0, 2, 3]);
    }

    #[test]
    fn bad_shards_are_refused_with_what_is_wrong() {
        assert!("3/4".parse::<Shard>().is_ok());
        let e = "4/4".parse::<Shard>().unwrap_err();
        assert!(e.contains("from 0 to 3"), "{e}");
        assert!("0/0".parse::<Shard>().unwrap_err().contains("at least 1"));
        assert!("a/4".parse::<Shard>().unwrap_err().contains("`a`"));
        assert!("2".parse::<Shard>().unwrap_err().contains("I/N"));
        assert_eq!(
            " 2 / 4 ".parse::<Shard>().unwrap(),
            Shard::new(2, 4).unwrap()
        );
    }
}
