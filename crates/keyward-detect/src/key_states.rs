//! Every tracked key's state, by key id: a small index (id to slot) over a dense vector
//! of states.
//!
//! Why not a map of states: a state is about 1.5 KB, and held in the hash table itself
//! the id that a lookup compares sits at the head of that 1.5 KB, so every lookup of a
//! key not seen for a while missed the CPU cache on the comparison alone, before it
//! reached the state (over half of the detectors' own time with 20,000 busy keys). The
//! index holds 20 bytes per key and stays in cache.

use uuid::Uuid;

use crate::KeyMap;
use crate::key::KeyState;

#[derive(Debug, Default)]
pub struct KeyStates {
    slots: KeyMap<u32>,
    /// States, with their key's id (to rebuild the index when keys are dropped).
    states: Vec<(Uuid, KeyState)>,
}

impl KeyStates {
    pub fn len(&self) -> usize {
        self.states.len()
    }

    pub fn contains(&self, key: &Uuid) -> bool {
        self.slots.contains_key(key)
    }

    pub fn get(&self, key: &Uuid) -> Option<&KeyState> {
        let slot = *self.slots.get(key)?;
        Some(&self.states[slot as usize].1)
    }

    pub fn get_mut(&mut self, key: &Uuid) -> Option<&mut KeyState> {
        let slot = *self.slots.get(key)?;
        Some(&mut self.states[slot as usize].1)
    }

    /// The key's state, made by `new` if the key has none yet.
    pub fn get_or_insert_with(
        &mut self,
        key: Uuid,
        new: impl FnOnce() -> KeyState,
    ) -> &mut KeyState {
        let next = self.states.len();
        let slot = *self.slots.entry(key).or_insert_with(|| {
            // Slots are u32: the detectors' `keys_max` keeps far below that.
            u32::try_from(next).unwrap_or(u32::MAX)
        });
        if slot as usize == next {
            self.states.push((key, new()));
        }
        &mut self.states[slot as usize].1
    }

    /// Keeps the states `keep` says to keep (the index is rebuilt).
    pub fn retain(&mut self, mut keep: impl FnMut(&KeyState) -> bool) {
        self.states.retain(|(_, state)| keep(state));
        self.slots.clear();
        for (slot, (key, _)) in self.states.iter().enumerate() {
            self.slots.insert(*key, slot as u32);
        }
    }

    pub fn values(&self) -> impl Iterator<Item = &KeyState> {
        self.states.iter().map(|(_, state)| state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_are_found_by_key_after_dropping_others() {
        let mut keys = KeyStates::default();
        for i in 0..100u128 {
            keys.get_or_insert_with(Uuid::from_u128(i), || KeyState::new(None, i as i64));
        }
        // Found again, not made twice.
        keys.get_or_insert_with(Uuid::from_u128(7), || unreachable!());
        assert_eq!(keys.len(), 100);
        keys.retain(|k| k.first_seen % 3 == 0);
        assert_eq!(keys.len(), 34);
        for i in 0..100u128 {
            let state = keys.get(&Uuid::from_u128(i));
            assert_eq!(state.is_some(), i % 3 == 0);
            if let Some(s) = state {
                assert_eq!(s.first_seen, i as i64);
            }
        }
    }
}
