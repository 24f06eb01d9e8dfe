//! The neighbourhood of each station: its k nearest stations within a radius.
//!
//! Coordinates are projected to metres on a local equirectangular plane around the system's
//! mean latitude (exact enough at city scale) and indexed in an R*-tree (`rstar`). The index
//! is rebuilt only when station information changed, at the next tick, so the rebuild is a
//! pure function of the event sequence (restores reproduce it).

use rstar::{AABB, PointDistance, RTree, RTreeObject};

const EARTH_RADIUS_M: f64 = 6_371_000.0;

#[derive(Debug, Clone, Copy)]
struct Pt {
    xy: [f64; 2],
    idx: u32,
}

impl RTreeObject for Pt {
    type Envelope = AABB<[f64; 2]>;
    fn envelope(&self) -> Self::Envelope {
        AABB::from_point(self.xy)
    }
}

impl PointDistance for Pt {
    fn distance_2(&self, p: &[f64; 2]) -> f64 {
        let (dx, dy) = (self.xy[0] - p[0], self.xy[1] - p[1]);
        dx * dx + dy * dy
    }
}

/// For each station (by index), the indices of its neighbours, nearest first.
/// `coords[i]` is `None` for a station without coordinates: it gets no neighbours and is
/// nobody's neighbour.
pub fn build(coords: &[Option<(f64, f64)>], k: usize, radius_m: f64) -> Vec<Vec<u32>> {
    let known: Vec<(usize, (f64, f64))> = coords
        .iter()
        .enumerate()
        .filter_map(|(i, c)| c.map(|c| (i, c)))
        .collect();
    if known.is_empty() || k == 0 {
        return vec![Vec::new(); coords.len()];
    }
    let lat0 = known.iter().map(|(_, (lat, _))| lat).sum::<f64>() / known.len() as f64;
    let cos0 = lat0.to_radians().cos();
    let project = |(lat, lon): (f64, f64)| {
        [
            lon.to_radians() * cos0 * EARTH_RADIUS_M,
            lat.to_radians() * EARTH_RADIUS_M,
        ]
    };
    let points: Vec<Pt> = known
        .iter()
        .map(|&(i, c)| Pt {
            xy: project(c),
            idx: u32::try_from(i).unwrap_or(u32::MAX),
        })
        .collect();
    let tree = RTree::bulk_load(points);
    let r2 = radius_m * radius_m;
    let mut out = vec![Vec::new(); coords.len()];
    for &(i, c) in &known {
        let p = project(c);
        out[i] = tree
            .nearest_neighbor_iter_with_distance_2(&p)
            .filter(|(pt, _)| pt.idx as usize != i)
            .take_while(|(_, d2)| *d2 <= r2)
            .take(k)
            .map(|(pt, _)| pt.idx)
            .collect();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_within_radius_and_missing_coordinates() {
        // Three stations ~111 m apart on a meridian, one far away, one without coordinates.
        let coords = vec![
            Some((43.000, -79.0)),
            Some((43.001, -79.0)),
            Some((43.002, -79.0)),
            Some((44.000, -79.0)),
            None,
        ];
        let nb = build(&coords, 5, 500.0);
        assert_eq!(nb[0], vec![1, 2]);
        assert_eq!(nb[1].len(), 2);
        assert!(nb[3].is_empty(), "111 km away: nobody within 500 m");
        assert!(nb[4].is_empty());
        assert_eq!(build(&coords, 1, 500.0)[2], vec![1]);
    }
}
