//! The page and the front-end libraries it uses, embedded in the binary: no CDN, no build
//! step. Leaflet and uPlot are copied unchanged from their npm packages (versions,
//! licences and checksums in `assets/vendor/README.md`).

/// The page.
pub const PAGE: &str = include_str!("../assets/index.html");

/// Leaflet's version, vendored under `assets/vendor/leaflet-<version>/`.
pub const LEAFLET_VERSION: &str = "1.9.4";
/// uPlot's version, vendored under `assets/vendor/uplot-<version>/`.
pub const UPLOT_VERSION: &str = "1.6.32";

const FILES: &[(&str, &str, &[u8])] = &[
    (
        "dashboard.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../assets/dashboard.js"),
    ),
    (
        "dashboard.css",
        "text/css; charset=utf-8",
        include_bytes!("../assets/dashboard.css"),
    ),
    (
        "vendor/leaflet-1.9.4/leaflet.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../assets/vendor/leaflet-1.9.4/leaflet.js"),
    ),
    (
        "vendor/leaflet-1.9.4/leaflet.css",
        "text/css; charset=utf-8",
        include_bytes!("../assets/vendor/leaflet-1.9.4/leaflet.css"),
    ),
    (
        "vendor/leaflet-1.9.4/images/layers.png",
        "image/png",
        include_bytes!("../assets/vendor/leaflet-1.9.4/images/layers.png"),
    ),
    (
        "vendor/leaflet-1.9.4/images/layers-2x.png",
        "image/png",
        include_bytes!("../assets/vendor/leaflet-1.9.4/images/layers-2x.png"),
    ),
    (
        "vendor/leaflet-1.9.4/images/marker-icon.png",
        "image/png",
        include_bytes!("../assets/vendor/leaflet-1.9.4/images/marker-icon.png"),
    ),
    (
        "vendor/leaflet-1.9.4/images/marker-icon-2x.png",
        "image/png",
        include_bytes!("../assets/vendor/leaflet-1.9.4/images/marker-icon-2x.png"),
    ),
    (
        "vendor/leaflet-1.9.4/images/marker-shadow.png",
        "image/png",
        include_bytes!("../assets/vendor/leaflet-1.9.4/images/marker-shadow.png"),
    ),
    (
        "vendor/uplot-1.6.32/uPlot.iife.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../assets/vendor/uplot-1.6.32/uPlot.iife.min.js"),
    ),
    (
        "vendor/uplot-1.6.32/uPlot.min.css",
        "text/css; charset=utf-8",
        include_bytes!("../assets/vendor/uplot-1.6.32/uPlot.min.css"),
    ),
];

/// The content type and bytes of the asset at `path` (relative to `/assets/`).
pub fn find(path: &str) -> Option<(&'static str, &'static [u8])> {
    FILES
        .iter()
        .find(|(p, _, _)| *p == path)
        .map(|(_, t, b)| (*t, *b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_names_only_embedded_assets() {
        for part in PAGE.split("/assets/").skip(1) {
            let path = part.split('"').next().unwrap_or("");
            assert!(
                find(path).is_some(),
                "the page loads /assets/{path}, not embedded"
            );
        }
        assert!(PAGE.contains(&format!("leaflet-{LEAFLET_VERSION}/")));
        assert!(PAGE.contains(&format!("uplot-{UPLOT_VERSION}/")));
        assert!(find("../Cargo.toml").is_none());
    }
}
