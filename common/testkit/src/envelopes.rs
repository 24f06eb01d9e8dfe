//! Building the events tests feed the processor and the pipeline.

use bikeshare_types::contracts::{Envelope, Event, StationStatus};
use bikeshare_types::{StationId, SystemId, Timestamp};

/// A plain station report at `t`: installed, renting and returning, `bikes` bikes and
/// `docks` free docks, nothing disabled, no e-bike count.
pub fn station_status(station: &str, t: Timestamp, bikes: u32, docks: u32) -> StationStatus {
    StationStatus {
        station_id: StationId::new(station),
        num_bikes_available: bikes,
        num_ebikes_available: None,
        num_bikes_disabled: None,
        num_docks_available: Some(docks),
        num_docks_disabled: None,
        is_installed: true,
        is_renting: true,
        is_returning: true,
        last_reported: t,
        vehicle_types_available: vec![],
    }
}

/// [`station_status`] in an envelope of `system` from `source`, seen when it was reported
/// (`t_ms`, milliseconds since the epoch).
pub fn status_envelope(
    system: &str,
    source: &str,
    station: &str,
    t_ms: i64,
    bikes: u32,
    docks: u32,
) -> Envelope {
    let t = Timestamp(t_ms);
    Envelope::new(
        SystemId::new(system),
        source,
        t,
        t,
        Event::StationStatus(station_status(station, t, bikes, docks)),
    )
}
