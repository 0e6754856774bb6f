//! The parts of a converter a source state carries across restarts: [`ConverterState`],
//! and [`VllmConverter::export`] / [`VllmConverter::restore`].

#[cfg(any(feature = "zmq", test))]
use kvtier_events::InstanceId;

#[cfg(any(feature = "zmq", test))]
use super::VllmConvertConfig;
use super::{MapEntry, VllmConverter};

impl VllmConverter {
    /// The parts of the converter a source state carries: next event id, group decisions,
    /// map entries and ghost queue.
    #[cfg(any(feature = "zmq", test))]
    pub(crate) fn export(&self) -> ConverterState {
        let mut groups: Vec<(i64, bool)> = self.groups.iter().map(|(g, a)| (*g, *a)).collect();
        groups.sort_unstable();
        ConverterState {
            next_event_id: self.next_event_id,
            groups,
            entries: {
                let mut entries: Vec<(u64, MapEntry)> =
                    self.map.iter().map(|(fp, e)| (fp, *e)).collect();
                entries.sort_unstable_by_key(|&(fp, _)| fp);
                entries
            },
            ghosts: self.map.ghost_queue().collect(),
        }
    }

    /// A converter resumed from `state`.
    #[cfg(any(feature = "zmq", test))]
    pub(crate) fn restore(
        instance: InstanceId,
        config: VllmConvertConfig,
        state: &ConverterState,
    ) -> Self {
        let mut conv = Self::new(instance, config);
        conv.set_next_event_id(state.next_event_id);
        conv.groups = state.groups.iter().copied().collect();
        for &(fp, entry) in &state.entries {
            conv.map.restore(fp, entry);
        }
        for &fp in &state.ghosts {
            conv.map.restore_ghost(fp);
        }
        conv
    }
}

/// What a source state carries of one converter.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ConverterState {
    pub(crate) next_event_id: u64,
    pub(crate) groups: Vec<(i64, bool)>,
    pub(crate) entries: Vec<(u64, MapEntry)>,
    pub(crate) ghosts: Vec<u64>,
}
