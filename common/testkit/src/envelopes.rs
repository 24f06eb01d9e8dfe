//! Building the events tests feed the processor and the pipeline.

use bikeshare_types::contracts::{
    Envelope, Event, FeatureSchemaId, Label, ModelRef, Prediction, PredictionTrigger, ScoredBy,
    StationInfo, StationStatus,
};
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

/// A docking station `station` named `name` at (`lat`, `lon`) with `capacity` docks: not
/// virtual, no short name, no region.
pub fn station_info(station: &str, name: String, lat: f64, lon: f64, capacity: u32) -> StationInfo {
    StationInfo {
        station_id: StationId::new(station),
        name,
        short_name: None,
        lat,
        lon,
        capacity: Some(capacity),
        region_id: None,
        is_virtual_station: false,
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

/// A prediction for `station` of `system` at `as_of` with the contract's id (30-minute
/// horizon): schema version 1, scored in process by model `baseline` version `1` on feature
/// schema `fs1`, trigger `Update`. Tests override what they vary with struct-update syntax.
pub fn prediction(
    system: &str,
    station: &str,
    as_of: Timestamp,
    p_empty: f32,
    p_full: f32,
) -> Prediction {
    let (system_id, station_id) = (SystemId::new(system), StationId::new(station));
    Prediction {
        schema_version: 1,
        prediction_id: Prediction::id_for(&system_id, &station_id, as_of, 30),
        system_id,
        station_id,
        as_of,
        horizon_minutes: 30,
        p_empty,
        p_full,
        model: ModelRef {
            name: "baseline".into(),
            version: "1".into(),
        },
        feature_schema_id: FeatureSchemaId("fs1".into()),
        trigger: PredictionTrigger::Update,
        scored_by: ScoredBy::InProcess,
        revision: 0,
    }
}

/// The label of `p` (schema version 1, 30-minute horizon) with nothing happening: neither
/// empty nor full, then or after, `observations` reports seen.
pub fn label(p: &Prediction, observations: u32) -> Label {
    Label {
        schema_version: 1,
        prediction_id: p.prediction_id.clone(),
        system_id: p.system_id.clone(),
        station_id: p.station_id.clone(),
        as_of: p.as_of,
        horizon_minutes: 30,
        went_empty: false,
        went_full: false,
        empty_at_as_of: false,
        full_at_as_of: false,
        observations,
    }
}
