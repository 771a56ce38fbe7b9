//! [`Registry`]: the slot arena the core keeps agents and frameworks in, with a free list and an
//! index by id, addressed by the index newtypes [`AgentIdx`] and [`FrameworkIdx`].
//!
//! A slot is reused (last freed, first reused) once its entity is removed, so a stale index can
//! point at a newer entity: the core drops every index of an entity when it removes it (offers,
//! filters, task lists), and [`MasterCore::check_invariants`](super::MasterCore::check_invariants)
//! checks that none is left.

use std::collections::HashMap;
use std::marker::PhantomData;

/// An index into a [`Registry`].
pub(crate) trait Idx: Copy + Eq + Ord + std::hash::Hash + std::fmt::Debug {
    /// The index of slot `slot`.
    fn from_slot(slot: usize) -> Self;
    /// The slot this index names.
    fn slot(self) -> usize;
}

macro_rules! index_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub(crate) struct $name(u32);

        impl Idx for $name {
            fn from_slot(slot: usize) -> Self {
                // The core bounds agents and frameworks far below u32::MAX (Config::max_agents).
                $name(u32::try_from(slot).unwrap_or(u32::MAX))
            }

            fn slot(self) -> usize {
                self.0 as usize
            }
        }
    };
}

index_type!(
    /// An agent's slot in the core's agent registry.
    AgentIdx
);
index_type!(
    /// A framework's slot in the core's framework registry.
    FrameworkIdx
);

/// An entity a [`Registry`] holds: it knows its own id.
pub(crate) trait Keyed {
    /// Its id, unique in its registry.
    fn id(&self) -> &str;
}

/// Entities of type `T` by slot, each with a unique string id.
#[derive(Debug, Clone)]
pub(crate) struct Registry<I, T> {
    slots: Vec<Option<T>>,
    free: Vec<usize>,
    index: HashMap<String, I>,
    _index: PhantomData<I>,
}

impl<I: Idx, T: Keyed> Registry<I, T> {
    pub(crate) fn new() -> Self {
        Registry {
            slots: Vec::new(),
            free: Vec::new(),
            index: HashMap::new(),
            _index: PhantomData,
        }
    }

    /// Adds `value` under its id, in the slot freed last (or a new one). The id must not be in use.
    pub(crate) fn insert(&mut self, value: T) -> I {
        let id = value.id().to_owned();
        let slot = match self.free.pop() {
            Some(s) => {
                self.slots[s] = Some(value);
                s
            }
            None => {
                self.slots.push(Some(value));
                self.slots.len() - 1
            }
        };
        let i = I::from_slot(slot);
        self.index.insert(id, i);
        i
    }

    /// Removes the entity at `i`, freeing its slot.
    pub(crate) fn remove(&mut self, i: I) -> Option<T> {
        let value = self.slots.get_mut(i.slot())?.take()?;
        if self.index.get(value.id()) == Some(&i) {
            self.index.remove(value.id());
        }
        self.free.push(i.slot());
        Some(value)
    }

    /// The index of the entity known by `id`.
    pub(crate) fn lookup(&self, id: &str) -> Option<I> {
        self.index.get(id).copied()
    }

    /// The entity at `i`, if the slot holds one.
    pub(crate) fn get(&self, i: I) -> Option<&T> {
        self.slots.get(i.slot())?.as_ref()
    }

    /// The entity at `i`, mutably.
    pub(crate) fn get_mut(&mut self, i: I) -> Option<&mut T> {
        self.slots.get_mut(i.slot())?.as_mut()
    }

    /// Every entity with its index, in slot order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (I, &T)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(s, v)| Some((I::from_slot(s), v.as_ref()?)))
    }

    /// How many slots there are, used or free: every index is below it.
    pub(crate) fn slot_count(&self) -> usize {
        self.slots.len()
    }

    /// Every entity mutably, in slot order.
    pub(crate) fn values_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.slots.iter_mut().flatten()
    }

    /// Every entity, in slot order.
    pub(crate) fn values(&self) -> impl Iterator<Item = &T> {
        self.slots.iter().flatten()
    }

    /// How many entities there are.
    pub(crate) fn len(&self) -> usize {
        self.index.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Keyed for &str {
        fn id(&self) -> &str {
            self
        }
    }

    #[test]
    fn a_freed_slot_is_reused_and_the_old_id_no_longer_resolves() {
        let mut r: Registry<AgentIdx, &str> = Registry::new();
        let a = r.insert("a");
        let b = r.insert("b");
        assert_eq!(r.remove(a), Some("a"));
        assert_eq!(r.lookup("a"), None);
        assert_eq!(r.get(a), None);
        let c = r.insert("c");
        assert_eq!(c, a, "the freed slot is reused");
        assert_eq!(r.lookup("c").and_then(|i| r.get(i)), Some(&"c"));
        assert_eq!(r.iter().map(|(_, v)| *v).collect::<Vec<_>>(), ["c", "b"]);
        assert_eq!(r.len(), 2);
        assert_eq!(r.get(b), Some(&"b"));
    }
}
